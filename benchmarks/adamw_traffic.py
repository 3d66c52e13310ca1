#!/usr/bin/env python3
"""The traffic model's optimizer bytes against the AdamW step torch really takes (issue 26).

trainables/traffic.py says torch's fused AdamW moves 7 passes over the trainable parameters per step (read param,
grad, exp_avg, exp_avg_sq; write param, exp_avg, exp_avg_sq). At the triad bandwidth that predicts the step:
optimizer bytes / triad GB/s. Two ways to measure it:

- trials (default): through the project's own launcher and worker (trainables.launcher.run_trial: a fresh pinned
  worker; the row's `optimizer_s` is the mean optimizer phase over the measured steps, optimizer.step() and
  zero_grad(set_to_none=True); `roofline_bandwidth_gbs` the triad at the trial's threads, measured or cached in the
  worker; `foreign_cpu_s` what others ran on its CPUs meanwhile). Short sequences and batch 1: the optimizer's work
  does not depend on them.
- --direct: in this process, the model's parameters (trainables/weights.parameter_shapes) with random gradients and
  torch.optim.AdamW(fused=True) as the torch trainer builds it, REPEATS timed step() calls after WARMUP: the kernel
  alone, no forward or backward between the steps to evict the state from the caches.

    venv/bin/python benchmarks/adamw_traffic.py [--direct] [--only NAME ...] [--json rows.json] [--data-dir DIR]

Run it on a quiet machine: anything beside it shares the memory bandwidth it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables.config import build_config  # noqa: E402
from trainables.traffic import optimizer_bytes  # noqa: E402

STEPS = {"warmup_steps": 2, "measure_steps": 10, "measure_seconds": 0, "dataset": "offline", "seq_len": 64}
CASES = {
    "d4 w256": {"depth": 4, "width": 256, "heads": 4},
    "d6 w512": {"depth": 6, "width": 512, "heads": 8},
    "small": {"model": "small"},
    "small bf16": {"model": "small", "precision": "bf16"},
    "medium": {"model": "medium"},
}
WARMUP, REPEATS = 3, 15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direct", action="store_true", help="time the fused AdamW step alone, in this process")
    parser.add_argument("--only", nargs="*", help="run only the cases whose name contains one of these")
    parser.add_argument("--json", type=Path, help="also write every result here")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="the data dir (tokens/, hw/); a fresh one makes the triad be measured now, instead of read from a "
        "figure cached while something else ran; default: the launcher's",
    )
    args = parser.parse_args()
    names = [n for n in CASES if not args.only or any(part in n for part in args.only)]
    mode = "direct loop" if args.direct else "trials"
    now = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    print(f"{now} UTC, {platform.node()}, {len(names)} cases, {mode}", file=sys.stderr)
    results = {}
    for name in names:
        started = time.perf_counter()
        cfg = build_config(STEPS | CASES[name])
        results[name] = direct(cfg, args.data_dir) if args.direct else trial(cfg, args.data_dir)
        print(f"{name}: {time.perf_counter() - started:.0f} s {results[name].get('error') or ''}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    return 0


def trial(cfg, data_dir: Path | None) -> dict:
    from trainables.launcher import run_trial

    row = run_trial(cfg, **({"data_dir": data_dir} if data_dir else {}))
    if row.get("status") != "ok" or row.get("optimizer_roofline_bytes") is None:
        return {"error": f"status {row.get('status')}: {row.get('error') or 'no optimizer columns'}"}
    return {
        "params": row["params"],
        "precision": cfg.precision,
        "bytes": row["optimizer_roofline_bytes"],
        "bandwidth_gbs": row["roofline_bandwidth_gbs"],
        "measured_s": row["optimizer_s"],
        "spread": f"mean ± {row['optimizer_std_s'] * 1e3:.1f}",
        "foreign_cpu_s": row.get("foreign_cpu_s"),
    }


def direct(cfg, data_dir: Path | None) -> dict:
    import torch

    from hwctl.microbench import memory_bandwidth_gbs
    from trainables.launcher import DATA_DIR
    from trainables.weights import ADAMW, parameter_shapes

    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    shapes = parameter_shapes(cfg)
    params = [torch.nn.Parameter(torch.randn(shape, dtype=dtype) * 0.02) for shape in shapes.values()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, fused=True, **ADAMW)
    times = []
    for i in range(WARMUP + REPEATS):
        started = time.perf_counter()
        optimizer.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - started)
    bandwidth = memory_bandwidth_gbs(threads, (data_dir or DATA_DIR) / "hw")["bandwidth_gbs"]
    return {
        "params": sum(p.numel() for p in params),
        "precision": cfg.precision,
        "bytes": optimizer_bytes(cfg),
        "bandwidth_gbs": bandwidth,
        "measured_s": statistics.median(times),
        "spread": f"median, min {min(times) * 1e3:.1f}",
        "foreign_cpu_s": None,
    }


def table(results: dict[str, dict]) -> str:
    lines = [
        "| case | params | precision | optimizer bytes (MB) | triad GB/s | predicted ms | measured ms "
        "| measured / predicted | attained GB/s | foreign CPU s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | {r['error']} |")
            continue
        predicted = r["bytes"] / r["bandwidth_gbs"] / 1e9
        foreign = "" if r["foreign_cpu_s"] is None else f"{r['foreign_cpu_s']:.2f}"
        lines.append(
            f"| {name} | {r['params']:,} | {r['precision']} | {r['bytes'] / 1e6:,.0f} | {r['bandwidth_gbs']:.1f} "
            f"| {predicted * 1e3:.1f} | {r['measured_s'] * 1e3:.1f} ({r['spread']}) "
            f"| {r['measured_s'] / predicted:.2f} | {r['bytes'] / r['measured_s'] / 1e9:.1f} | {foreign} |"
        )
    footer = (
        "\npredicted = optimizer bytes (7 passes over the trainable parameters, trainables/traffic.py) / triad GB/s; "
        "attained = bytes / measured; foreign CPU s: what other processes ran on the trial's CPUs during its measured "
        "steps (trials only)."
    )
    return "\n".join(lines) + "\n" + footer


if __name__ == "__main__":
    sys.exit(main())
