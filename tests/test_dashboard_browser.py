"""The Ray dashboard in a real browser while `bench.py run --dashboard` sweeps: headless Chromium gets past Ray's
token dialog with what `ray get-auth-token` prints, as a person would, and the driver's job page lists the trial
running on its actor. Skipped with the reason where no Chromium is installed (tests/browser.py).

With BENCH_SCREENSHOT_DIR set, the job page is also saved there as dashboard.png (benchmarks/screenshots.py)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from sweep.results.store import Store
from tests.bench_process import kill_session, start_bench, write_plan
from tests.browser import chromium_page, skip_without_chromium


class Token(str):
    """The token, kept out of a failed test's traceback (pytest prints the arguments of each frame)."""

    def __repr__(self) -> str:
        return "<the token `ray get-auth-token` printed>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def drain(proc: subprocess.Popen, lines: list[str]) -> threading.Thread:
    """Read the sweep's output as it comes, so its pipe never fills while the browser looks."""
    thread = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    thread.start()
    return thread


def wait_for_line(lines: list[str], prefix: str, proc: subprocess.Popen, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while not (found := [i for i, line in enumerate(lines) if line.startswith(prefix)]):
        assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)[-3000:]
        time.sleep(0.2)
    return found[0]


def sign_in(page, url: str, token: str) -> None:
    """What a person does on the first visit: paste the token into Ray's dialog. It is kept as a cookie after."""
    page.goto(url)
    dialog = page.get_by_role("dialog", name="Authentication Token Required")
    dialog.wait_for()
    assert "use `ray get-auth-token` to retrieve it" in dialog.inner_text()
    dialog.get_by_role("textbox", name="Authentication Token").fill(token)
    dialog.get_by_role("button", name="Submit").click()
    dialog.wait_for(state="detached")  # the page reloads signed in, on its overview
    page.get_by_text("Recent jobs").wait_for()
    assert "ray-authentication-token" in {cookie["name"] for cookie in page.context.cookies()}


def open_job_tables(page) -> None:
    """The job page, reloaded, with its Task Table and Actor Table open: each loads when opened, and the actor table
    does not refresh itself."""
    page.reload()
    page.get_by_text("Ray Core Overview").wait_for()
    for table in ("Task Table", "Actor Table"):
        page.get_by_role("heading", name=table, exact=True).click()
    page.get_by_text("Last updated").wait_for()


def wait_for_running_trial(page, proc: subprocess.Popen, timeout: float = 150):
    """The trial's task row (RUNNING) and its actor's row (ALIVE), reloading until the first trial has started."""
    deadline = time.monotonic() + timeout
    while True:
        open_job_tables(page)
        rows = page.get_by_role("row")
        train = rows.filter(has_text="tune_trial.train").filter(has_text="RUNNING")
        actor = rows.filter(has_text="ImplicitFunc").filter(has_text="ALIVE")
        if train.count() and actor.count():
            return train.first.inner_text(), actor.first.inner_text()
        assert proc.poll() is None and time.monotonic() < deadline, page.inner_text("body")[-3000:]
        time.sleep(2)


def save_screenshot(page, directory: str) -> None:
    """The job page without the sections that say nothing about trials here (no driver logs, no Prometheus)."""
    for section in ("Logs", "Task Timeline (beta)", "Cluster status and autoscaler"):
        page.get_by_role("heading", name=section, exact=True).click()
    # a viewport as tall as the page down to the trial's actor, not full_page: the page scrolls inside its own frame,
    # and a full-page capture repeats the top bar over the middle
    page.set_viewport_size({"width": 1280, "height": 2400})
    page.evaluate("window.scrollTo(0, 0)")
    actor = page.get_by_role("row").filter(has_text="ImplicitFunc").filter(has_text="ALIVE").first.bounding_box()
    page.set_viewport_size({"width": 1280, "height": int(actor["y"] + actor["height"]) + 24})
    path = Path(directory) / "dashboard.png"
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")


def test_the_dashboard_lists_the_running_trial_after_the_token_dialog(tmp_path):
    skip_without_chromium()
    # two trials of about 4 s of steps each: the sweep is still running when the first trial's rows are on the page
    plan = write_plan(
        tmp_path / "live.yaml",
        [{"name": "seed", "axis": "seed", "values": [0, 1]}],
        name="live",
        measure_steps=1000,
        measure_seconds=4,
    )
    port = free_port()  # a Ray of its own beside any other (a sweep at the default 8265)
    store = tmp_path / "store"
    args = ["run", "--plan", str(plan), "--result-dir", str(store), "--dashboard", "--dashboard-port", str(port)]
    # token auth as Ray >= 2.59 has it by default, whatever the caller's environment says
    proc = start_bench(*args, env={"RAY_AUTH_MODE": "token"})
    lines: list[str] = []
    reader = drain(proc, lines)
    try:
        at = wait_for_line(lines, "Ray dashboard: ", proc)
        url = f"http://127.0.0.1:{port}"
        assert lines[at : at + 2] == [
            f"Ray dashboard: {url}\n",
            "  token authentication is on: paste what `venv/bin/ray get-auth-token` prints into the page's token "
            "dialog\n",
        ]
        ray_cli = Path(sys.executable).parent / "ray"
        token = Token(subprocess.run([ray_cli, "get-auth-token"], capture_output=True, text=True, check=True).stdout)
        assert re.fullmatch(r"\S{32,}", token), "ray get-auth-token printed no token"

        with chromium_page(height=900) as page:
            sign_in(page, url, token)
            page.get_by_role("link", name="Jobs", exact=True).click()
            job = page.get_by_role("row").filter(has_text="bench.py run --plan")
            job.wait_for()
            assert "RUNNING" in job.inner_text() and f"--dashboard-port {port}" in job.inner_text()
            job_id = re.search(r"\b[0-9a-f]{8}\b", job.inner_text()).group()  # the driver's job, e.g. 01000000
            job.get_by_role("link", name=job_id).first.click()
            page.wait_for_url(f"**/#/jobs/{job_id}")

            train, actor = wait_for_running_trial(page, proc)
            assert proc.poll() is None  # seen while the sweep runs
            # Tune's trial runs as an actor task `<trainable>.train` on an `ImplicitFunc` actor whose repr is the
            # trainable's name (the prefix of Tune's trial names), holding the trial's bundle: every CPU of the node
            assert re.match(rf"\S+\s+tune_trial\.train\s+{job_id}\s+RUNNING\b", train), train
            assert "ImplicitFunc.train" in train
            # its columns: ID, worker ID ("-" at times), class, name (none), repr, state
            assert re.search(r"\bImplicitFunc\s+-\s+tune_trial\s+ALIVE\b", actor) and job_id in actor, actor
            assert f'"CPU": {len(os.sched_getaffinity(0))}' in actor
            page_text = page.inner_text("body")
            assert "RUNNING" in page_text and "wait_until_trial_cpus_quiet" in page_text  # the job; its settle task
            if os.environ.get("BENCH_SCREENSHOT_DIR"):
                save_screenshot(page, os.environ["BENCH_SCREENSHOT_DIR"])

        proc.wait(timeout=240)
        reader.join(timeout=10)
    finally:
        kill_session(proc)
    out = "".join(lines)
    assert proc.returncode == 0, out[-3000:]
    assert re.search(r"\btune_trial_[0-9a-f]{8}\b", out)  # Tune's table in the terminal names the same trainable
    rows = Store(store).rows()
    assert sorted(r["seed"] for r in rows) == [0, 1] and {r["status"] for r in rows} == {"ok"}
