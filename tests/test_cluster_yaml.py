"""The shipped cluster.yaml passes Ray's own cluster-config validation once its placeholders are filled;
its shell commands do what their comments say; the e2e copy (scripts/cluster_e2e.py) stays valid too."""

import importlib.util
import os
import subprocess
from pathlib import Path

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO_ROOT


def filled_config(head="127.0.0.1", worker="127.0.0.2") -> dict:
    text = (REPO_ROOT / "cluster.yaml").read_text()
    for placeholder in ("YOUR_HEAD_IP", "YOUR_WORKER_IP_1", "YOUR_SSH_USER"):
        assert text.count(placeholder) == 2  # clearly marked (and named in the steps) for the user to fill in
    # a search-and-replace of the placeholders, as a user would do it, must not touch $RAY_HEAD_IP
    filled = text.replace("YOUR_HEAD_IP", head).replace("YOUR_WORKER_IP_1", worker).replace("YOUR_SSH_USER", "root")
    return yaml.safe_load(filled)


def load_e2e_script():
    spec = importlib.util.spec_from_file_location("cluster_e2e", REPO_ROOT / "scripts" / "cluster_e2e.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_shell(command: str, env: dict, home: Path) -> str:
    """One config command as the launcher runs it: bash, $HOME set, `ray` replaced by an echo."""
    command = command.replace("~/cpu-pretrain-bench/venv/bin/ray", "echo ray")
    env = {"PATH": os.environ["PATH"], "HOME": str(home)} | env
    return subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, check=True).stdout


def test_cluster_yaml_is_a_valid_ray_launcher_config():
    prepared = prepare_config(filled_config())  # what `ray up` does: fill defaults, then validate
    validate_config(prepared)
    assert prepared["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.2"]}
    head = " ".join(prepared["head_start_ray_commands"])
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert "--address=$RAY_HEAD_IP:6379" in worker and "--num-cpus=$(nproc)" in head + worker
    assert "bench_node" not in head + worker  # sweeps target nodes through Ray's own node:<IP> resource
    assert "RAY_enable_autoscaler_v2=0" in head  # v2 never starts a local-provider worker (see cluster.yaml)
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "make venv/.installed sysdeps" in prepared["setup_commands"][0]


def test_each_node_registers_with_the_address_it_was_reached_on(tmp_path):
    config = filled_config()
    head, worker = config["head_start_ray_commands"][-1], config["worker_start_ray_commands"][-1]
    over_ssh = {"SSH_CONNECTION": "10.0.0.9 50022 10.0.0.5 22", "RAY_HEAD_IP": "10.0.0.4"}
    started = run_shell(head, over_ssh, tmp_path)
    expected = (
        "ray start --head --port=6379 --node-ip-address=10.0.0.5 --dashboard-host=127.0.0.1 "
        f"--num-cpus={len(os.sched_getaffinity(0))} --autoscaling-config=~/ray_bootstrap_config.yaml"
    )
    assert started.split() == expected.split()
    assert "--address=10.0.0.4:6379 --node-ip-address=10.0.0.5 " in run_shell(worker, over_ssh, tmp_path)
    assert "--node-ip-address" not in run_shell(worker, {"RAY_HEAD_IP": "10.0.0.4"}, tmp_path)  # Ray's own choice


def test_setup_puts_ray_on_the_login_path_once(tmp_path):
    line = filled_config()["setup_commands"][1]
    (tmp_path / ".bashrc").write_text("alias ll='ls -l'\n")
    for _ in range(2):  # `ray up` on a running cluster runs setup again
        run_shell(line, {}, tmp_path)
    lines = (tmp_path / ".bashrc").read_text().splitlines()
    assert lines[0] == "alias ll='ls -l'" and len(lines) == 2
    env = run_shell(f"source {tmp_path}/.bashrc; echo $PATH; echo $RAY_AUTH_MODE", {}, tmp_path).split()
    assert env[0].endswith(f":{tmp_path}/cpu-pretrain-bench/venv/bin") and env[1] == "token"  # after, not before


def test_the_e2e_copy_is_valid_and_stops_no_ray_but_its_own(tmp_path):
    e2e = load_e2e_script()
    shipped = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
    config = e2e.e2e_cluster_config(shipped, "127.0.0.2", "127.0.0.3", tmp_path / "id", tmp_path, 18265)
    validate_config(prepare_config(config))
    assert config["cluster_name"] == "cpu-pretrain-bench-e2e"
    assert config["provider"]["worker_ips"] == ["127.0.0.3"] and config["auth"]["ssh_user"] == "root"
    head, worker = config["head_start_ray_commands"], config["worker_start_ray_commands"]
    assert len(head) == len(worker) == 1  # no `ray stop`: on one machine it would stop every Ray there
    assert f"ray start --temp-dir={tmp_path}/ray-head --dashboard-port=18265 --head" in head[0]
    assert f"ray start --temp-dir={tmp_path}/ray-worker --address=" in worker[0]
    assert head[0].startswith(f"export CPB_E2E_RUN={tmp_path}; ")  # how teardown finds this run's processes
    assert config["setup_commands"] == shipped["setup_commands"][:1]  # root's ~/.bashrc stays as it is
    assert shipped["head_start_ray_commands"][0].endswith("ray stop")  # the shipped copy is untouched


def test_ray_validation_rejects_a_misspelt_key():
    import jsonschema
    import pytest

    text = (REPO_ROOT / "cluster.yaml").read_text().replace("head_start_ray_commands", "head_start_ray_commandz")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_commandz"):
        validate_config(prepare_config(yaml.safe_load(text.replace("YOUR_HEAD_IP", "127.0.0.1"))))
