#!/usr/bin/env python3
"""The screenshots in benchmarks/README.md, each taken by the browser test that checks that page (tests/browser.py's
headless Chromium), so a picture shows what a passing check saw.

    venv/bin/python benchmarks/screenshots.py dashboard [--out benchmarks/img]
    venv/bin/python benchmarks/screenshots.py report --page result/report/<sweep>/index.html [--out benchmarks/img]

dashboard: the Ray dashboard's job page while a two-trial `bench.py run --dashboard` sweeps, with the trial's task
RUNNING and its actor ALIVE (tests/test_dashboard_browser.py, which saves it where BENCH_SCREENSHOT_DIR says).
report: the first screen (1280 x 900) of a real sweep's index.html, after the checks tests/test_report_findings.py
makes on a synthetic one: the findings table and the forest plot start on that screen, every image loaded.
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


def report(out: Path, page: Path | None) -> Path:
    sys.path.insert(0, str(REPO_ROOT))
    from tests.browser import chromium_page

    if page is None or not page.is_file():
        sys.exit(f"report needs --page, an index.html that exists (got {page})")
    path = out / "report-first-screen.png"
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(1280, 900) as browser:
        browser.goto(page.resolve().as_uri())
        widths = browser.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        tops = [
            browser.eval_on_selector(selector, "e => e.getBoundingClientRect().top")
            for selector in ("h2#findings", "h2#findings ~ table", "img[alt^='forest plot']")
        ]
        if not widths or min(widths) <= 0 or not all(0 <= top < 900 for top in tops):
            sys.exit(f"{page}: images {widths}, findings/table/plot tops {tops}: not all on the first screen")
        browser.screenshot(path=str(path))
    return path


def dashboard(out: Path, page: Path | None = None) -> Path:
    path = out / "dashboard.png"
    path.unlink(missing_ok=True)  # an older one must not pass for this run's
    run_browser_test("tests/test_dashboard_browser.py", out)
    if not path.exists():  # the test was skipped: pytest exits 0 then
        sys.exit(f"no {path}: the test was skipped (see its reason above)")
    return path


SCREENSHOTS = {"dashboard": dashboard, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("screenshot", choices=sorted(SCREENSHOTS))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "img")
    parser.add_argument("--page", type=Path, help="report: the index.html to photograph")
    args = parser.parse_args()
    print(f"screenshot: {SCREENSHOTS[args.screenshot](args.out, args.page)}")


if __name__ == "__main__":
    main()
