"""The compiler keys (README: "Compilers and the system under the trial") through the real worker process: each value
changes what it claims (the count of fused kernels, the compile command line, the cache hits, the vector ISA), read
back from the row, and every value this node cannot honour is refused with the reason. Trials run two at a time, one
CPU each (~1.5 min in all here)."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hwctl.isa import cpu_flags
from tests.conftest import CPUINFO_FIXTURES, TINY
from trainables.config import build_config
from trainables.jax_backend.environment import framework_environment
from trainables.launcher import DATA_DIR, compile_environment, run_trial
from trainables.torch_backend.compile_setup import compile_unsupported_reason

SMALL = TINY | {"depth": 1, "width": 32, "seq_len": 16, "batch_size": 2, "learning_rate": 0.01}
STEPS = {"warmup_steps": 1, "measure_steps": 20, "measure_seconds": 0}
INDUCTOR = {"compile": "inductor", "cxx_opt": "O2", "march": "x86-64-v3"}
HAS_AVX2 = {"avx2", "fma"} <= cpu_flags()


def run_worker(values: dict, folder: Path, cpu: int) -> dict:
    """One trial through the launcher (trainables/launcher.py run_trial: its compile cache folder, the priming run of
    a warm trial, the real worker process) on CPU `cpu`; its result row."""
    cfg = build_config(SMALL | STEPS | values | {"core_list": str(cpu)})
    folder.mkdir(parents=True, exist_ok=True)
    row = run_trial(
        cfg,
        data_dir=DATA_DIR,
        output_dir=folder / "output",
        allowed_cpus={cpu},
        journal_path=folder / "hw-journal.json",
    )
    assert row["status"] == "ok", (row.get("error"), row.get("traceback"), row.get("stderr_tail"))
    return row


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> dict[str, dict]:
    """Every trial of this file, in two lanes of one CPU each."""
    folder = tmp_path_factory.mktemp("compile-axes")

    def lane_0() -> dict:
        return {
            "cold": run_worker(INDUCTOR | {"jit_cache": "cold"}, folder / "cold", 0),
            "warm": run_worker(INDUCTOR | {"jit_cache": "warm"}, folder / "warm", 0),
            "aot_eager": run_worker({"compile": "aot_eager"}, folder / "aot", 0),
            "jax_cold": run_worker({"framework": "jax", "jit_cache": "cold"}, folder / "jax", 0),
            "jax_warm": run_worker({"framework": "jax", "jit_cache": "warm"}, folder / "jax", 0),
        }

    def lane_1() -> dict:
        simd = {"simdlen": 256} if HAS_AVX2 else {}
        return {
            "fusion_off": run_worker({"compile": "inductor", "fusion": "off"} | simd, folder / "off", 1),
            "max_autotune": run_worker({"compile": "inductor-max-autotune"}, folder / "autotune", 1),
            "jax_fusion_off": run_worker({"framework": "jax", "fusion": "off"}, folder / "jax-off", 1),
        }

    if len(os.sched_getaffinity(0)) < 2 or not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1")
    with ThreadPoolExecutor(2) as pool:
        lanes = [pool.submit(lane_0), pool.submit(lane_1)]
        return lanes[0].result() | lanes[1].result()


def test_fusion_off_leaves_every_op_its_own_kernel(rows):
    on, off = rows["cold"], rows["fusion_off"]
    # measured here (depth 1): on, 32 kernels of which 27 fuse several ops; off, 145 kernels, none fused
    assert on["fused_kernels"] >= on["generated_kernels"] / 2 > 5, on
    assert off["fused_kernels"] == 0 and off["generated_kernels"] > 3 * on["generated_kernels"], off
    assert off["fusion_settings"]["max_fusion_size"] == 1 and off["fusion_settings"]["realize_each_op"] is True
    assert on["fusion_settings"] is None
    # XLA: --xla_disable_hlo_passes=fusion leaves only the single-op fusions XLA:CPU wraps every op into
    jax_on, jax_off = rows["jax_cold"], rows["jax_fusion_off"]
    assert jax_on["fused_kernels"] > 20 and jax_off["fused_kernels"] == 0, (jax_on, jax_off)
    assert jax_off["generated_kernels"] > 2 * jax_on["generated_kernels"]
    assert "--xla_disable_hlo_passes=fusion" in jax_off["xla_flags"]
    assert jax_off["fusion_settings"] == {"xla_disable_hlo_passes": ["fusion"]}


def test_the_compile_line_has_the_asked_level_and_target(rows):
    command = rows["cold"]["cxx_command"].split()
    assert "-O2" in command and "-O3" not in command, command  # Inductor's hard-coded -O3, replaced by the shim
    assert "-march=x86-64-v3" in command and command[0] == shutil.which("g++")
    assert any(arg.endswith(".cpp") for arg in command) and "-o" in command
    assert rows["cold"]["cxx_compiles"] > 5  # every kernel group, Inductor's ISA test builds, its precompiled header
    assert rows["cold"]["cxx_version"].startswith("g++")
    assert "-O3" in rows["fusion_off"]["cxx_command"].split()  # cxx_opt auto: Inductor's own level
    if HAS_AVX2:  # march=x86-64-v3 caps the vector width at v3's: no AVX-512 flags beside a generic target
        assert rows["cold"]["vec_isa"] == "avx2 (256-bit)" and "-mavx512f" not in command


@pytest.mark.skipif(not HAS_AVX2, reason="simdlen=256 needs AVX2")
def test_simdlen_picks_the_vector_isa(rows):
    off = rows["fusion_off"]  # simdlen=256
    assert off["vec_isa"] == "avx2 (256-bit)"
    command = off["cxx_command"].split()
    assert "CPU_CAPABILITY_AVX2" in command and "-mavx2" in command and "-mavx512f" not in command
    assert rows["cold"]["vec_isa"].endswith("-bit)")


def test_a_warm_cache_is_hit_by_another_process(rows):
    cold, warm = rows["cold"], rows["warm"]
    assert cold["jit_cache_misses"] >= 1 and cold["jit_cache_hits"] == 0
    assert warm["jit_cache_hits"] >= 1 and warm["jit_cache_misses"] == 0
    # each trial's cache is a folder of its own, which the launcher primed for the warm one in another process
    assert warm["jit_cache_dir"] != cold["jit_cache_dir"] and warm["jit_cache_prime_s"] > warm["compile_s"]
    assert cold.get("jit_cache_prime_s") is None
    assert {json.loads(row["env"])["TORCHINDUCTOR_CACHE_DIR"] for row in (cold, warm)} == {
        f"{cold['jit_cache_dir']}",
        f"{warm['jit_cache_dir']}",
    }
    assert json.loads(warm["env"])["CXX"].endswith("/cxx/g++")
    assert warm["compile_s"] < cold["compile_s"] / 3, (cold["compile_s"], warm["compile_s"])
    assert warm["cxx_compiles"] <= 2  # no kernel compiled again (Inductor preprocesses its header once per process)
    # the kernel counts come with the cached graphs
    assert (warm["fused_kernels"], warm["generated_kernels"]) == (cold["fused_kernels"], cold["generated_kernels"])
    jax_cold, jax_warm = rows["jax_cold"], rows["jax_warm"]
    assert (jax_cold["jit_cache_hits"], jax_cold["jit_cache_misses"]) == (0, 1)
    assert (jax_warm["jit_cache_hits"], jax_warm["jit_cache_misses"]) == (1, 0)
    assert jax_warm["compile_s"] < jax_cold["compile_s"]


@pytest.mark.parametrize("case", ["aot_eager", "max_autotune", "fusion_off", "cold"])
def test_each_compile_mode_trains(rows, case):
    row = rows[case]
    assert row["loss_last"] < row["loss_first"] - 0.3, (case, row["loss_first"], row["loss_last"])


def test_aot_eager_generates_no_code(rows):
    row = rows["aot_eager"]
    assert (row["fused_kernels"], row["generated_kernels"]) == (0, 0)
    assert row["jit_cache_misses"] is row["jit_cache_hits"] is None  # it has no persistent cache to ask
    assert row.get("cxx_command") is None


def test_simulated_cpu_without_avx512_refuses_512_bit_code(monkeypatch):
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES["zen3-avx2"]))
    refused = compile_unsupported_reason(build_config(SMALL | {"compile": "inductor", "simdlen": 512}))
    assert refused.startswith("simdlen=512 needs vector instructions this CPU lacks (avx512bw")
    refused = compile_unsupported_reason(build_config(SMALL | {"compile": "inductor", "march": "x86-64-v4"}))
    assert refused.startswith("march='x86-64-v4' code would not run here: this CPU lacks avx512bw")
    for allowed in ({"simdlen": 256}, {"simdlen": 0}, {"march": "x86-64-v3"}, {"march": "native"}):
        assert compile_unsupported_reason(build_config(SMALL | {"compile": "inductor"} | allowed)) is None, allowed
    monkeypatch.setenv("BENCH_CPUINFO", str(CPUINFO_FIXTURES["zen5-avx512"]))
    assert compile_unsupported_reason(build_config(SMALL | {"compile": "inductor", "simdlen": 512})) is None


def test_a_compiler_the_node_lacks_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler at all
    monkeypatch.delenv("CXX", raising=False)
    clang = build_config(SMALL | {"compile": "inductor", "cxx": "clang++"})
    assert compile_unsupported_reason(clang) == "cxx='clang++' is not installed on this node"
    auto = build_config(SMALL | {"compile": "inductor-max-autotune"})
    assert compile_unsupported_reason(auto) == (
        "compile='inductor-max-autotune' needs a C++ compiler, and 'g++' is not installed on this node"
    )
    assert compile_unsupported_reason(build_config(SMALL | {"compile": "aot_eager"})) is None  # no C++ code


def test_the_environment_of_each_compiled_trial(tmp_path):
    assert compile_environment(build_config(SMALL), tmp_path / "eager") == {}
    env = compile_environment(build_config(SMALL | INDUCTOR), tmp_path / "inductor")
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "inductor" / "inductor")
    assert env["TORCHINDUCTOR_CPP_MARCH"] == "x86-64-v3" and env["TMPDIR"].startswith(str(tmp_path / "inductor"))
    shim = Path(env["CXX"])
    assert shim.name == "g++" and os.access(shim, os.X_OK) and "-O2" in shim.read_text()
    jax = compile_environment(build_config(SMALL | {"framework": "jax"}), tmp_path / "jax")
    assert jax["JAX_COMPILATION_CACHE_DIR"] == str(tmp_path / "jax" / "jax")
    assert jax["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
    assert jax["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] == "-1"
    # a cold trial on a primed cache would measure a warm one
    (tmp_path / "inductor" / "inductor" / "fxgraph").mkdir()
    with pytest.raises(ValueError, match="jit_cache=cold needs an empty compile cache"):
        compile_environment(build_config(SMALL | INDUCTOR), tmp_path / "inductor")
    assert compile_environment(build_config(SMALL | INDUCTOR | {"jit_cache": "warm"}), tmp_path / "inductor")


def test_fusion_off_turns_off_xla_fusion_in_the_worker_environment():
    off = framework_environment(build_config(SMALL | {"framework": "jax", "fusion": "off"}))
    assert off["XLA_FLAGS"].endswith(" --xla_disable_hlo_passes=fusion")
    assert (
        "--xla_disable_hlo_passes" not in framework_environment(build_config(SMALL | {"framework": "jax"}))["XLA_FLAGS"]
    )
