"""A simulated /sys/devices/system/cpu with cpufreq policies, intel_pstate and boost, in a temp dir."""

from __future__ import annotations

from pathlib import Path


def make_cpufreq_tree(root: Path, cpus: int = 4, pstate: bool = True, boost: bool = False) -> Path:
    cpu = root / "devices/system/cpu"
    for i in range(cpus):
        policy = cpu / "cpufreq" / f"policy{i}"
        policy.mkdir(parents=True)
        files = {
            "scaling_governor": "powersave",
            "scaling_available_governors": "performance powersave",
            "scaling_driver": "intel_pstate",
            "cpuinfo_min_freq": "800000",
            "cpuinfo_max_freq": "3600000",
            "scaling_min_freq": "800000",
            "scaling_max_freq": "3600000",
            "scaling_cur_freq": "2400000",
            "related_cpus": str(i),
        }
        for name, value in files.items():
            (policy / name).write_text(value + "\n")
        (cpu / f"cpu{i}" / "cpufreq").mkdir(parents=True, exist_ok=True)
        (cpu / f"cpu{i}" / "cpufreq" / "scaling_cur_freq").write_text("2400000\n")
    if pstate:
        (cpu / "intel_pstate").mkdir(parents=True)
        (cpu / "intel_pstate" / "no_turbo").write_text("0\n")
    if boost:
        (cpu / "cpufreq" / "boost").write_text("1\n")
    (cpu / "online").write_text(f"0-{cpus - 1}\n")
    return root


def state(root: Path) -> dict[str, str]:
    """Every file of the simulated tree and its content."""
    return {str(p.relative_to(root)): p.read_text().strip() for p in sorted(root.rglob("*")) if p.is_file()}


def make_rapl(
    root: Path, packages: int = 1, energy_uj: int = 1_000_000, max_range_uj: int = 262_143_328_850
) -> list[Path]:
    domains = []
    for i in range(packages):
        domain = root / "class/powercap" / f"intel-rapl:{i}"
        (domain / f"intel-rapl:{i}:0").mkdir(parents=True)  # a core sub-domain: not counted twice
        (domain / f"intel-rapl:{i}:0" / "energy_uj").write_text("5\n")
        (domain / "energy_uj").write_text(f"{energy_uj}\n")
        (domain / "max_energy_range_uj").write_text(f"{max_range_uj}\n")
        domains.append(domain)
    return domains
