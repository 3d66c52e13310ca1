"""Core selection on simulated sysfs topologies."""

from pathlib import Path

import pytest

from hwctl.cores import format_cpu_list, parse_cpu_list, read_topology, select_cpus


def make_sysfs(root: Path, sockets: int, cores: int, smt: int) -> set[int]:
    """Linux numbering: cpu ids run over all first threads of every core, then over the siblings."""
    cpu_dir = root / "devices/system/cpu"
    total = sockets * cores * smt
    for cpu in range(total):
        thread, rest = divmod(cpu, sockets * cores)
        package, core = divmod(rest, cores)
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        topo.mkdir(parents=True)
        (topo / "physical_package_id").write_text(f"{package}\n")
        (topo / "core_id").write_text(f"{core}\n")
    (cpu_dir / "online").write_text(f"0-{total - 1}\n")
    return set(range(total))


def test_cpu_list_round_trip():
    assert parse_cpu_list("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert format_cpu_list([3, 1, 2]) == "1,2,3"


def test_topology_marks_smt_siblings(tmp_path):
    allowed = make_sysfs(tmp_path, sockets=2, cores=2, smt=2)
    cpus = read_topology(tmp_path, allowed)
    assert [(c.cpu, c.package, c.core, c.thread) for c in cpus[:5]] == [
        (0, 0, 0, 0),
        (1, 0, 1, 0),
        (2, 1, 0, 0),
        (3, 1, 1, 0),
        (4, 0, 0, 1),
    ]


@pytest.mark.parametrize(
    "count, policy, expected",
    [
        (1, "compact", [0]),
        (2, "compact", [0, 1]),  # both physical cores of socket 0
        (3, "compact", [0, 1, 2]),
        (4, "compact", [0, 1, 2, 3]),  # every physical core before any sibling
        (5, "compact", [0, 1, 2, 3, 4]),
        (2, "spread", [0, 2]),  # one core on each socket
        (4, "spread", [0, 1, 2, 3]),
        (6, "spread", [0, 1, 2, 3, 4, 6]),  # then siblings, again alternating sockets
    ],
)
def test_selection_orders(tmp_path, count, policy, expected):
    allowed = make_sysfs(tmp_path, sockets=2, cores=2, smt=2)
    assert select_cpus(count, policy, tmp_path, allowed) == expected


def test_selection_respects_allowed_cpus(tmp_path):
    make_sysfs(tmp_path, sockets=1, cores=4, smt=1)
    assert select_cpus(2, "compact", tmp_path, allowed={1, 3}) == [1, 3]
    with pytest.raises(ValueError, match="3 cores asked for, 2 available"):
        select_cpus(3, "compact", tmp_path, allowed={1, 3})


def test_this_machine(tmp_path):
    cpus = read_topology()
    assert len(cpus) >= 1 and all(c.thread >= 0 for c in cpus)
    assert select_cpus(1, "compact") == [min(c.cpu for c in cpus if c.thread == 0)]
