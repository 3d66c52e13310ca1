"""Headless Chromium for the browser checks (the report's HTML page, the Ray dashboard): Debian's chromium driven by
playwright, which downloads no browser of its own here. `make test` installs chromium where it runs as root
(Makefile, sysdeps); elsewhere the checks skip and say why."""

from __future__ import annotations

import contextlib
import shutil

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def skip_without_chromium() -> str:
    """Chromium's path, or the test is skipped with the reason."""
    path = chromium_path()
    if path is None:
        pytest.skip(f"no Chromium on PATH (looked for {', '.join(CHROMIUM_NAMES)}); `make test` installs it as root")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:  # requirements.txt has it: a venv made before it was added
        pytest.skip(f"playwright is not installed ({exc}); run `make test` to update venv/")
    return path


@contextlib.contextmanager
def chromium_page(width: int = 1280, height: int = 900):
    """A page of a fresh headless Chromium; root needs --no-sandbox."""
    from playwright.sync_api import sync_playwright

    path = skip_without_chromium()
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
