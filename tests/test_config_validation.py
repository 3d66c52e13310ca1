import pytest

from trainables.config import ConfigError, build_config, parse_assignments


@pytest.mark.parametrize(
    "values, message",
    [
        ({"kv_heads": 3}, "kv_heads=3 must divide heads=4"),
        ({"attention": "sliding", "window": 512}, "window=512 exceeds seq_len=256"),
        ({"activation": "tanh"}, "unknown activation 'tanh' (gelu, relu, silu)"),
        ({"precision": "q16"}, "unknown precision 'q16' (fp32, bf16, mixed, q8, q4, bitnet)"),
        (
            {"framework": "jax", "precision": "q8"},
            "precision='q8' cannot run with framework='jax' (it supports precision fp32, bf16)",
        ),
        (
            {"framework": "numpy", "optimizer": "lamb"},
            "optimizer='lamb' cannot run with framework='numpy' (it supports optimizer adamw)",
        ),
        ({"optimizer": "adam"}, "unknown optimizer 'adam' (adamw, sgd, lamb, lookahead)"),
        ({"framework": "jax", "freeze_layers": 1}, "freeze_layers=1 is applied only by framework='torch'"),
        (
            {"framework": "numpy", "fused_linear_act": True},
            "fused_linear_act=True is applied only by framework='torch'",
        ),
        ({"freeze_layers": 4}, "freeze_layers=4 must be in [0, 3]"),
        ({"model": "huge"}, "unknown model preset 'huge' (small, medium, large, xl, 2.7B)"),
        (
            {"precision": "q4", "width": 48, "heads": 4},
            "precision='q4' quantises weights in groups of 32 input features: width 48, heads × head_dim 48",
        ),
        ({"framework": "tensorflow"}, "unknown framework 'tensorflow' (torch, jax, numpy)"),
        (
            {"framework": "numpy", "precision": "bf16"},
            "precision='bf16' cannot run with framework='numpy' (it supports precision fp32)",
        ),
        (
            {"framework": "jax", "blas": "mkl"},
            "blas='mkl' cannot run with framework='jax' (it supports blas eigen, ynnpack, onednn)",
        ),
        ({"framework": "jax", "precision": "mixed"}, "precision='mixed' cannot run with framework='jax'"),
        ({"framework": "numpy", "attn_backend": "sdpa"}, "attn_backend='sdpa' cannot run with framework='numpy'"),
        (
            {"compile": "jit"},
            "compile='jit' cannot run with framework='torch' (it supports compile eager, inductor, "
            "inductor-max-autotune, aot_eager)",
        ),
        (
            {"blas": "openblas"},
            "blas='openblas' cannot run with framework='torch' (it supports blas mkl, onednn-fp32, onednn-bf16math)",
        ),
        ({"framework": "jax", "interop_threads": 2}, "interop_threads=2 is applied only by framework='torch'"),
        ({"framework": "numpy", "isa": "avx2"}, "isa='avx2' is applied only by framework='torch'"),
        (
            {"blas": "cublas"},
            "unknown blas 'cublas' (mkl, onednn-fp32, onednn-bf16math, onednn, ynnpack, eigen, openblas)",
        ),
        ({"widht": 512}, "unknown key 'widht'"),
        ({"width": "wide"}, "width='wide' is not a valid int"),
        ({"depth": 0}, "depth=0 must be >= 1"),
        ({"dropout": 1.5}, "dropout=1.5 must be in [0.0, 0.9]"),
        ({"width": 250, "heads": 4}, "heads=4 must divide width=250 when head_dim is auto"),
        ({"attention": "local", "window": 100}, "window=100 must divide seq_len=256"),
        ({"pinning": "tight"}, "unknown pinning 'tight' (none, compact, spread)"),
        ({"depth": "auto"}, "depth: 'auto' is not allowed here"),
        ({"save_model": "maybe"}, "save_model='maybe' is not a valid bool"),
        # the compiler and system keys (README: "Compilers and the system under the trial")
        ({"fusion": "off"}, "fusion='off' needs a compiler with fusion passes"),
        ({"jit_cache": "warm"}, "jit_cache='warm' needs a compiled trial: compile='eager' caches nothing"),
        ({"compile": "aot_eager", "jit_cache": "warm"}, "jit_cache='warm' cannot run with compile='aot_eager'"),
        (
            {"cxx_opt": "O2"},
            "cxx_opt='O2' sets how generated C++ code is built: it needs compile inductor or inductor-max-autotune, "
            "not 'eager'",
        ),
        (
            {"framework": "jax", "march": "x86-64"},
            "march='x86-64' sets how generated C++ code is built: no compile of ",
        ),
        (
            {"framework": "numpy", "fusion": "off"},
            "fusion='off' needs a compiler with fusion passes (framework='numpy' has none)",
        ),
        (
            {"framework": "jax", "compile": "eager", "fusion": "off"},
            "fusion='off' needs a compiler with fusion passes (compile jit)",
        ),
        ({"compile": "inductor", "simdlen": 128}, "simdlen=128 must be one of 0, 256, 512"),
        ({"compile": "inductor", "march": "armv8"}, "unknown march 'armv8'"),
        ({"omp_wait": "spin"}, "unknown omp_wait 'spin' (active, passive)"),
        ({"framework": "jax", "omp_proc_bind": "close"}, "omp_proc_bind='close' is applied only by framework='torch'"),
        ({"gomp_spincount": -1}, "gomp_spincount=-1 must be >= 0"),
        ({"smt": "siblings", "pinning": "none"}, "smt='siblings' places threads on sibling pairs: it needs pinning"),
        ({"smt": "siblings", "core_list": "0,1"}, "smt='siblings' chooses the CPUs itself"),
        ({"numa": "near"}, "numa='near': give local, interleave or a NUMA node id"),
        ({"dataset_tokens": 100}, "dataset_tokens=100 must be >= 258"),
    ],
)
def test_bad_values_are_rejected_with_a_message_naming_key_and_value(values, message):
    with pytest.raises(ConfigError) as err:
        build_config(values)
    assert message in str(err.value)


def test_autos_resolve_to_the_values_that_run():
    cfg = build_config({"width": "512", "heads": "8"})
    assert (cfg.head_dim, cfg.kv_heads, cfg.attn_dim) == (64, 8, 512)
    assert (cfg.warmup_steps, cfg.measure_steps, cfg.measure_seconds) == (2, 10, 60.0)
    assert cfg.threads is None  # resolved on the node that runs the trial
    assert build_config({"compile": "inductor"}).warmup_steps == 3


def test_framework_autos_resolve_per_framework_and_leave_torch_keys_as_they_were():
    torch_cfg, jax_cfg, numpy_cfg = (build_config({"framework": f}) for f in ("torch", "jax", "numpy"))
    assert (torch_cfg.compile, torch_cfg.attn_backend, torch_cfg.blas, torch_cfg.warmup_steps) == (
        "eager",
        "sdpa",
        "mkl",
        2,
    )
    assert (jax_cfg.compile, jax_cfg.attn_backend, jax_cfg.blas, jax_cfg.warmup_steps) == ("jit", "sdpa", "eigen", 3)
    assert (numpy_cfg.compile, numpy_cfg.attn_backend, numpy_cfg.blas) == ("eager", "manual", "openblas")
    # the keys of configs written before these were autos (or an axis) stay what they were
    assert build_config({"dataset": "offline"}).config_key() == "860472523e80f2bf"  # computed before this change
    assert build_config({"blas": "mkl"}).to_dict() == torch_cfg.to_dict()  # the default asked for is the same trial
    assert build_config({"blas": "onednn-fp32"}).config_key() != torch_cfg.config_key()


def test_head_dim_may_differ_from_width_over_heads():
    cfg = build_config({"width": 256, "heads": 4, "head_dim": 32, "kv_heads": 1})
    assert (cfg.attn_dim, cfg.kv_dim) == (128, 32)


def test_config_key_is_stable_and_ignores_run_only_knobs():
    a = build_config({"width": 128, "heads": 2})
    b = build_config({"heads": "2", "width": "128", "timeout_s": 30, "save_model": "true"})
    c = build_config({"width": 128, "heads": 2, "head_dim": 64})  # head_dim auto resolves to 64: same model
    assert a.config_key() == b.config_key() == c.config_key()
    assert len(a.config_key()) == 16
    assert a.config_key() != build_config({"width": 128, "heads": 2, "seed": 1}).config_key()


def test_parse_assignments():
    assert parse_assignments(["width=512", "attention = local"]) == {"width": "512", "attention": "local"}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_assignments(["width"])


def test_defaults_are_the_quick_baseline_of_the_spec():
    cfg = build_config({})  # attn_backend and compile are autos the framework resolves
    assert (cfg.depth, cfg.width, cfg.heads, cfg.seq_len, cfg.batch_size, cfg.vocab_size) == (4, 256, 4, 256, 1, 8192)
    assert (cfg.attn_backend, cfg.precision, cfg.compile, cfg.pinning, cfg.interop_threads) == (
        "sdpa",
        "fp32",
        "eager",
        "compact",
        1,
    )


def test_a_model_preset_expands_and_keys_beside_it_win():
    small = build_config({"model": "small", "dataset": "offline"})
    assert (small.width, small.depth, small.heads, small.head_dim, small.mlp_ratio) == (768, 12, 12, 64, 4.0)
    assert small.model == "small"
    shallow = build_config({"model": "2.7B", "depth": 2, "dataset": "offline"})
    assert (shallow.width, shallow.depth, shallow.heads) == (2560, 2, 32)
    # the label stays out of config_key: the preset and its keys written out are one config
    spelled = build_config({"width": 768, "depth": 12, "heads": 12, "dataset": "offline"})
    assert small.config_key() == spelled.config_key()


def test_new_recipe_keys_at_their_defaults_keep_earlier_config_keys():
    base = build_config({"dataset": "offline"})
    explicit = build_config({"dataset": "offline", "optimizer": "adamw", "fused_linear_act": False, "freeze_layers": 0})
    assert base.config_key() == explicit.config_key() == "860472523e80f2bf"
    assert build_config({"dataset": "offline", "optimizer": "lamb"}).config_key() != base.config_key()


def test_yaml_booleans_become_the_spelling_of_the_key():
    """PyYAML reads on/off/false unquoted as booleans: fusion: off and omp_proc_bind: false still mean what they say."""
    assert build_config({"compile": "inductor", "fusion": False}).fusion == "off"
    assert build_config({"omp_proc_bind": False}).omp_proc_bind == "false"
    assert build_config({"omp_proc_bind": True}).omp_proc_bind == "true"


def test_a_compiled_trial_runs_on_an_explicit_cold_cache_that_keeps_old_keys():
    compiled = build_config({"compile": "inductor"})
    assert compiled.jit_cache == "cold" and build_config({}).jit_cache is None
    # cold is the default: the config_key of every earlier compiled trial holds; warm is a new point
    assert compiled.config_key() == build_config({"compile": "inductor", "jit_cache": "cold"}).config_key()
    assert compiled.config_key() != build_config({"compile": "inductor", "jit_cache": "warm"}).config_key()
    assert build_config({"dataset_tokens": 4096}).config_key() != build_config({}).config_key()
