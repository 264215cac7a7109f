"""A real browser for the page tests: Debian's Chromium driven by Playwright (no browser download).

Chromium comes from the distribution (`apt-get install chromium`). When it is missing and
we run as root with apt-get, it is installed here once; otherwise these tests skip and say why.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import apt_install

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def ensure_chromium() -> str | None:
    """Return why Chromium cannot be had, or None once it is installed."""
    return apt_install("chromium", CHROMIUM)


@pytest.fixture(scope="session")
def browser():
    problem = ensure_chromium()
    if problem:
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 900, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    try:
        yield page
    finally:
        context.close()


@pytest.fixture
def screenshot(page, request):
    """Save a screenshot of the page as a test artefact and check it is not blank."""
    from PIL import Image, ImageStat

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(step: str) -> Path:
        path = SCREENSHOTS / f"{request.node.name}-{step}.png"
        page.screenshot(path=str(path), full_page=True)
        with Image.open(path) as image:
            spread = ImageStat.Stat(image.convert("L")).stddev[0]
        assert spread > 5, f"screenshot {path.name} looks blank (grey-level spread {spread:.1f})"
        return path

    return take
