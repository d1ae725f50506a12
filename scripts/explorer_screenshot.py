"""Regenerate the README's picture of the explorer, ``docs/explorer.png``.

Run from the repository root with the ``test`` extra installed and a Chromium browser
(``make chromium``): ``python scripts/explorer_screenshot.py [PATH]``. It starts ``camscope serve``
with the default model, picks chelsea, shows Grad-CAM, Finer-CAM at gamma 1.2 and DiffCAM against
the other photos, waits for the maps and takes a screenshot of the page.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "explorer.png"
SETTLED = (
    "() => document.body.dataset.busy === '0' && [...document.querySelectorAll('.panel img.map')]"
    ".every((img) => img.complete && img.naturalWidth > 0)"
)


def screenshot(target: Path = TARGET) -> Path:
    """Drive the explorer in headless Chromium and save the page as PNG."""
    from playwright.sync_api import sync_playwright

    browser_path = os.environ.get("CAMSCOPE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    server = subprocess.Popen(
        [sys.executable, "-m", "camscope", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith("camscope explorer: "):
            raise SystemExit(f"camscope serve did not start: {line}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(300_000)
            page.goto(line.split()[2])
            page.click("#photo-chelsea")
            page.wait_for_selector("#predictions li:nth-child(5)")
            page.wait_for_function(SETTLED)
            page.check("#method-finer-gradcam")
            page.check("#method-diffcam")
            page.locator("#gamma").fill("1.2")
            page.wait_for_selector('.panel[data-key="diffcam"] img.map')
            page.wait_for_function(
                "() => (document.querySelector('.panel[data-key=\"finer-gradcam\"] .caption') || {})"
                ".textContent?.includes('gamma 1.2')"
            )
            page.wait_for_function(SETTLED)
            target.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(target), full_page=True)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
    return target


if __name__ == "__main__":
    print(f"wrote {screenshot(Path(sys.argv[1]) if len(sys.argv) > 1 else TARGET)}")
