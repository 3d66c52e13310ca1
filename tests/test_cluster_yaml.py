"""The shipped cluster.yaml passes Ray's own cluster-config validation once its placeholders are filled."""

import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from tests.conftest import REPO_ROOT


def test_cluster_yaml_is_a_valid_ray_launcher_config():
    text = (REPO_ROOT / "cluster.yaml").read_text()
    for placeholder in ("HEAD_IP", "WORKER_IP_1", "SSH_USER"):
        assert placeholder in text  # clearly marked for the user to fill in
    filled = text.replace("HEAD_IP", "127.0.0.1").replace("WORKER_IP_1", "127.0.0.2").replace("SSH_USER", "root")
    prepared = prepare_config(yaml.safe_load(filled))  # what `ray up` does: fill defaults, then validate
    validate_config(prepared)
    assert prepared["provider"] == {"type": "local", "head_ip": "127.0.0.1", "worker_ips": ["127.0.0.2"]}
    head = " ".join(prepared["head_start_ray_commands"])
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "RAY_AUTH_MODE=token" in head and "RAY_AUTH_MODE=token" in worker
    assert '"bench_node": 1' in head and '"bench_node": 1' in worker
    assert prepared["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "make venv/.installed sysdeps" in prepared["setup_commands"][0]


def test_ray_validation_rejects_a_misspelt_key():
    import jsonschema
    import pytest

    text = (REPO_ROOT / "cluster.yaml").read_text().replace("head_start_ray_commands", "head_start_ray_commandz")
    with pytest.raises(jsonschema.ValidationError, match="head_start_ray_commandz"):
        validate_config(prepare_config(yaml.safe_load(text.replace("HEAD_IP", "127.0.0.1"))))
