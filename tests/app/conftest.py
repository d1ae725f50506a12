"""The explorer's browser tests' browser: Debian's Chromium driven by Playwright, one per test process.

The fixtures live here, not in the test module, so that a module collected twice (``make test-order`` runs
the suite twice in one process) shares them: Playwright's sync API cannot start a second time in a thread
where it is running.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    """The Chromium binary, or a skip that says what is missing."""
    pytest.importorskip("fastapi", reason="the app extra is not installed: pip install 'camscope[app]'")
    pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python is not installed: pip install 'camscope[test]'"
    )
    path = os.environ.get("CAMSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).is_file():
        pytest.skip(
            f"no Chromium browser at {path}: install Debian's chromium (apt-get install chromium) to run the browser tests"
        )
    return path


@pytest.fixture(scope="session")
def browser(chromium_executable: str) -> Iterator[Any]:
    """One headless Chromium for the session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=chromium_executable, args=CHROMIUM_ARGS)
        except Exception as error:  # noqa: BLE001 - a browser that cannot start here (missing libraries) skips
            pytest.skip(f"Chromium at {chromium_executable} does not start: {error}")
        yield launched
        launched.close()
