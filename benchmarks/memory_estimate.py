#!/usr/bin/env python3
"""How close trainables/memory.py's estimate is to the peak RSS real trials record, on sizes that fit this machine.

Each case runs through the project's own launcher and worker (trainables.launcher.run_trial: a fresh worker process,
the row's `peak_rss_mb` is its ru_maxrss), with few steps: 1 cold + 1 warm-up + 3 measured steps, enough for the
steady state (the optimizer state exists from the second step on). It prints a markdown table: the estimate's parts,
the measured peak and measured / estimated.

    venv/bin/python benchmarks/memory_estimate.py [--only NAME ...] [--json rows.json]
    venv/bin/python benchmarks/memory_estimate.py --rows rows1.json rows2.json   # re-tabulate earlier runs

A case whose feature the trainer does not apply yet (optimizer, freeze_layers, precision q8/q4/bitnet: the row then
lacks the facts the trainer records for it) is reported as not applied instead of being compared.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables.config import build_config  # noqa: E402
from trainables.memory import MIB, estimate_training_memory  # noqa: E402

STEPS = {"warmup_steps": 1, "measure_steps": 3, "measure_seconds": 0, "dataset": "offline"}
BASELINE = {"depth": 4, "width": 256, "heads": 4}
WIDE = {"depth": 6, "width": 512, "heads": 8}
# name -> config values (over STEPS); the first calibrates runtime_bytes (its model is ~12 MiB in all)
CASES = {
    "runtime: d1 w64 s32 b1": {"depth": 1, "width": 64, "heads": 1, "seq_len": 32},
    "baseline d4 w256 s256 b1": BASELINE,
    "baseline b4": BASELINE | {"batch_size": 4},
    "wide d6 w512 s256 b4": WIDE | {"batch_size": 4},
    "wide b2 s1024 sdpa": WIDE | {"batch_size": 2, "seq_len": 1024},
    "wide b2 s1024 manual": WIDE | {"batch_size": 2, "seq_len": 1024, "attn_backend": "manual"},
    "wide b4 dropout 0.1": WIDE | {"batch_size": 4, "dropout": 0.1},
    "wide b4 grad_accum 2": WIDE | {"batch_size": 4, "grad_accum": 2},
    "wide b4 fused gelu": WIDE | {"batch_size": 4, "fused_linear_act": True},
    "small b1 s256": {"model": "small", "batch_size": 1, "seq_len": 256},
    "small b1 s512": {"model": "small", "batch_size": 1, "seq_len": 512},
    "small b4 s256": {"model": "small", "batch_size": 4, "seq_len": 256},
    "small b4 s512": {"model": "small", "batch_size": 4, "seq_len": 512},
    "small b4 s256 bf16": {"model": "small", "batch_size": 4, "seq_len": 256, "precision": "bf16"},
    "small b4 s256 mixed": {"model": "small", "batch_size": 4, "seq_len": 256, "precision": "mixed"},
    "medium b1 s256": {"model": "medium", "batch_size": 1, "seq_len": 256},
    # 3 steps (cold, warm-up, 1 measured): the second already has the optimizer state
    "large b1 s256": {"model": "large", "batch_size": 1, "seq_len": 256, "measure_steps": 1},
    "baseline b4 inductor": BASELINE | {"batch_size": 4, "compile": "inductor"},
    "baseline b4 numpy": BASELINE | {"batch_size": 4, "framework": "numpy"},
    "baseline b4 jax": BASELINE | {"batch_size": 4, "framework": "jax"},
    # applied only once the trainer wires torch_backend/optimizers.py and quantization.py (see applied())
    "wide b4 sgd": WIDE | {"batch_size": 4, "optimizer": "sgd"},
    "wide b4 lamb": WIDE | {"batch_size": 4, "optimizer": "lamb"},
    "wide b4 lookahead": WIDE | {"batch_size": 4, "optimizer": "lookahead"},
    "wide b4 freeze 4": WIDE | {"batch_size": 4, "freeze_layers": 4},
    "wide b4 q8": WIDE | {"batch_size": 4, "precision": "q8"},
    # the same with jemalloc: no glibc heap slack (trainables/memory.py)
    "wide b4 jemalloc": WIDE | {"batch_size": 4, "allocator": "jemalloc"},
    "wide b4 q8 jemalloc": WIDE | {"batch_size": 4, "precision": "q8", "allocator": "jemalloc"},
    "small b4 s256 jemalloc": {"model": "small", "batch_size": 4, "seq_len": 256, "allocator": "jemalloc"},
    "medium b1 s256 jemalloc": {"model": "medium", "batch_size": 1, "seq_len": 256, "allocator": "jemalloc"},
    "large b1 s256 jemalloc": {
        "model": "large",
        "batch_size": 1,
        "seq_len": 256,
        "measure_steps": 1,
        "allocator": "jemalloc",
    },
}
PARTS = ("weights", "gradients", "optimizer_state", "activations", "allocator_slack", "runtime")


def applied(cfg, row: dict) -> str | None:
    """Why the row does not show the case's feature applied (None when it does, or has none to show)."""
    if cfg.optimizer != "adamw" and "optimizer_class" not in row:
        return f"optimizer={cfg.optimizer}: the row has no optimizer_class (the trainer ran its default AdamW)"
    if cfg.freeze_layers and "frozen_params" not in row and "trainable_params" not in row:
        return "freeze_layers: the row has no frozen_params/trainable_params (nothing was frozen)"
    if cfg.precision in ("q8", "q4", "bitnet") and "quantization" not in row:
        return f"precision={cfg.precision}: the row has no quantization fact (the trainer ran fp32)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="run only the cases whose name contains one of these")
    parser.add_argument("--json", type=Path, help="also write every row (with its estimate) here")
    parser.add_argument(
        "--rows",
        nargs="*",
        type=Path,
        help="tabulate rows an earlier run wrote with --json (several: measured min-max) instead of running trials; "
        "the estimate is recomputed with the current trainables/memory.py",
    )
    args = parser.parse_args()

    names = [n for n in CASES if not args.only or any(part in n for part in args.only)]
    measured: dict[str, list[dict]] = {name: [] for name in names}
    if args.rows:
        for path in args.rows:
            for row in json.loads(path.read_text()):
                if row["case"] in measured:
                    measured[row["case"]].append(row)
    else:
        from trainables.launcher import run_trial

        print(f"{time.strftime('%Y-%m-%d')}, {platform.node()}, {len(names)} cases", file=sys.stderr)
        out = []
        for name in names:
            cfg = build_config(STEPS | CASES[name])
            started = time.perf_counter()
            row = run_trial(cfg)
            estimated = estimate_training_memory(cfg)["total"] / MIB
            print(
                f"{name}: {row.get('status')} in {time.perf_counter() - started:.0f} s, "
                f"{row.get('peak_rss_mb')} MiB vs {estimated:.0f}",
                file=sys.stderr,
            )
            measured[name].append(row)
            out.append({"case": name, "estimate_bytes": estimate_training_memory(cfg)} | row)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1, default=str))
    print(table(names, measured))
    return 0


def table(names: list[str], measured: dict[str, list[dict]]) -> str:
    lines = [
        "| case | params | weights | grads | optimizer | activations | glibc slack | runtime | **estimated** "
        "| **measured peak_rss_mb** | measured / estimated |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    notes = []
    for name in names:
        cfg = build_config(STEPS | CASES[name])
        parts = estimate_training_memory(cfg)
        estimated = parts["total"] / MIB
        peaks = []
        for row in measured[name]:
            reason = (
                applied(cfg, row) if row.get("status") == "ok" else f"status {row.get('status')}: {row.get('error')}"
            )
            if reason:
                notes.append(f"- {name}: a run not compared ({reason})")
            else:
                peaks.append(row["peak_rss_mb"])
        if not peaks:
            continue
        low, high = min(peaks), max(peaks)
        shown, ratio = f"{low:,.0f}", f"{low / estimated:.2f}"
        if f"{high:,.0f}" != shown:
            shown += f"–{high:,.0f}"
        if f"{high / estimated:.2f}" != ratio:
            ratio += f"–{high / estimated:.2f}"
        cells = [f"{parts[key] / MIB:,.0f}" for key in PARTS]
        params = next(row["params"] for row in measured[name] if row.get("params"))
        lines.append(f"| {name} | {params:,} | {' | '.join(cells)} | **{estimated:,.0f}** | **{shown}** | {ratio} |")
    footer = (
        "\nAll figures MiB (peak_rss_mb is ru_maxrss / 1024); measured: min–max over the runs given. Estimated = "
        "runtime + max(weights + buffers + gradients + optimizer state + max(activations, LAMB step temporaries) + "
        "glibc slack, the build peak) (trainables/memory.py)."
    )
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n" + footer


if __name__ == "__main__":
    sys.exit(main())
