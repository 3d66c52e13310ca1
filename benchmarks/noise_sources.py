#!/usr/bin/env python3
"""What else runs on the machine while a sweep's trials train: CPU seconds per process kind, from /proc.

    venv/bin/python benchmarks/noise_sources.py [--trials 6] [--extra-args "--repeats 1"]

Runs `bench.py run` on a plan of one baseline point measured `--trials` times (the quick plan's baseline), and
samples every process's utime+stime from /proc twice a second. Only the intervals in which a trial's worker process
(`python -m trainables.worker`) is alive count: the table says how many CPU seconds each kind of process used while
a trial was training, next to the workers' own. Nothing is inferred: a process's CPU time is what its /proc/<pid>/stat
says, summed over the intervals a worker ran.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO_ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
KINDS = (  # (kind, a substring of the command line that names it), first match wins
    ("trial worker (measured)", "trainables.worker"),
    ("raylet", "raylet"),
    ("gcs_server", "gcs_server"),
    ("dashboard agent", "dashboard/agent.py"),
    ("dashboard", "dashboard/dashboard.py"),
    ("log monitor", "log_monitor.py"),
    ("runtime-env agent", "runtime_env/agent"),
    ("monitor", "monitor.py"),
    ("Ray worker / trial actor", "ray::"),
    ("Ray worker (idle)", "default_worker.py"),
    ("bench.py driver", "bench.py"),
)


def _comm(entry: Path) -> str:
    try:
        return f"[{(entry / 'comm').read_text().strip()}]"
    except OSError:
        return "?"


def process_table() -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU seconds so far) of every process we may read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15 of stat)
        kind = next((k for k, needle in KINDS if needle in cmdline), None)
        if kind is None:  # name the rest by their command (kernel threads have no command line)
            kind = "other: " + (cmdline.split()[0].rsplit("/", 1)[-1] if cmdline.strip() else _comm(entry))
        table[int(entry.name)] = (kind, cpu)
    return table


def write_plan(folder: Path, trials: int) -> Path:
    quick = yaml.safe_load((REPO_ROOT / "sweep" / "plans" / "quick.yaml").read_text())
    # one study whose values are the same config under different seeds: `trials` identical measurements
    plan = {
        "name": "noise",
        "baseline": quick["baseline"],
        "studies": [{"name": "baseline", "axis": "seed", "values": list(range(trials))}],
    }
    path = folder / "noise.yaml"
    path.write_text(yaml.safe_dump(plan))
    return path


def trial_rows(result_dir: Path) -> list[dict]:
    from sweep.results.store import Store

    rows = [r for r in Store(result_dir).rows() if r["status"] == "ok"]
    return sorted(rows, key=lambda r: r.get("trial_order") or 0)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--extra-args", default="", help="more bench.py run arguments")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="noise-") as tmp:
        plan = write_plan(Path(tmp), args.trials)
        command = [sys.executable, "bench.py", "run", "--plan", str(plan), "--result-dir", str(Path(tmp) / "result")]
        command += shlex.split(args.extra_args)
        run = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        used: dict[str, float] = {}
        training_s = 0.0
        before, before_at = process_table(), time.monotonic()
        while run.poll() is None:
            time.sleep(0.5)
            after, after_at = process_table(), time.monotonic()
            if any(kind.startswith("trial worker") for kind, _ in after.values()):
                training_s += after_at - before_at
                for pid, (kind, cpu) in after.items():
                    previous = before[pid][1] if pid in before else 0.0  # a new process: all its time is new
                    used[kind] = used.get(kind, 0.0) + cpu - previous
            before, before_at = after, after_at
        output = run.stdout.read()
        rows = trial_rows(Path(tmp) / "result")
    print(output[-1500:])
    print("\ntrial   median ms   CV     foreign_cpu_s  steal_s  (over the measured steps)")
    for r in rows:
        print(
            f"{r['study']:<8}{r['step_time_median_s'] * 1e3:9.1f}  {r['step_time_cv']:6.1%}  "
            f"{r.get('foreign_cpu_s') or 0:12.3f}  {r.get('steal_s') or 0:7.3f}"
        )
    print(f"\nwhile a trial's worker was alive ({training_s:.1f} s of wall time on {os.cpu_count()} CPUs):")
    shown = {kind: cpu for kind, cpu in used.items() if cpu >= 0.01}
    for kind, cpu in sorted(shown.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<32} {cpu:7.2f} CPU-s  ({cpu / training_s:.1%} of one core)")
    rest = {kind: cpu for kind, cpu in used.items() if kind not in shown}
    print(f"  {len(rest)} more, under 0.01 CPU-s each: {sum(rest.values()):.2f} CPU-s together")
    return run.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
