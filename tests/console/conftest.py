"""The console in a real browser: Playwright for Python driving Debian's ``chromium`` package (``executable_path``;
no browser is downloaded), against real ``gateway serve`` processes on loopback.

Without /usr/bin/chromium (``apt-get install chromium``) these tests skip, except under CI=true where they fail:
.ci/run installs it. Each page's screenshot is kept under the test's temporary folder (``screenshots/``)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("Debian's chromium is not installed (apt-get install -y chromium): the console is not tested")
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    return CHROMIUM


@pytest.fixture(scope="session")
async def browser(chromium: Path) -> AsyncIterator[Any]:
    # The async API, on the suite's event loop: the sync one runs a loop of its own, which pytest-asyncio's refuses.
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    """A fresh tab (its own sessionStorage) on a laptop-sized window."""
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    tab = await context.new_page()
    tab.set_default_timeout(20_000)
    try:
        yield tab
    finally:
        await context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")
