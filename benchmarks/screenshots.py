#!/usr/bin/env python3
"""The screenshots in benchmarks/README.md, each taken by the browser test that checks that page (tests/browser.py's
headless Chromium), so a picture shows what a passing check saw.

    venv/bin/python benchmarks/screenshots.py dashboard [--out benchmarks/img]

dashboard: the Ray dashboard's job page while a two-trial `bench.py run --dashboard` sweeps, with the trial's task
RUNNING and its actor ALIVE (tests/test_dashboard_browser.py, which saves it where BENCH_SCREENSHOT_DIR says).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_browser_test(test: str, out: Path) -> None:
    """One test file, with BENCH_SCREENSHOT_DIR pointing at `out`; a skip (no Chromium) or a failure is an error."""
    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", test],
        cwd=REPO_ROOT,
        env=os.environ | {"BENCH_SCREENSHOT_DIR": str(out.resolve())},
    )
    if done.returncode != 0:
        sys.exit(f"{test} failed (exit {done.returncode}): no screenshot")


def dashboard(out: Path) -> Path:
    path = out / "dashboard.png"
    path.unlink(missing_ok=True)  # an older one must not pass for this run's
    run_browser_test("tests/test_dashboard_browser.py", out)
    if not path.exists():  # the test was skipped: pytest exits 0 then
        sys.exit(f"no {path}: the test was skipped (see its reason above)")
    return path


SCREENSHOTS = {"dashboard": dashboard}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("screenshot", choices=sorted(SCREENSHOTS))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "img")
    args = parser.parse_args()
    print(f"screenshot: {SCREENSHOTS[args.screenshot](args.out)}")


if __name__ == "__main__":
    main()
