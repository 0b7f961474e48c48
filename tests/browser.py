"""Driving the dashboard in a real headless Chromium: Debian's browser under
Playwright, users made with the CLI, signing in, and numbered screenshots
kept as test artifacts."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    async_playwright,
    expect,
)

from tests import support

# test-artifacts/screenshots/<test>/NN-step.png; each run of a test replaces
# its folder, so what is there belongs to the latest run.
SCREENSHOTS = support.REPO / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"
# A generous deadline for what the page waits on (live updates, runs), for
# actions and for expect() alike.
WAIT_MS = 25_000
expect.set_options(timeout=WAIT_MS)
# A fresh profile without the browser's own background traffic: no update,
# sync or component checks, no QUIC probing, nothing beyond loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's Chromium; Playwright never downloads a browser of its own."""
    found = shutil.which("chromium")
    assert found is not None, "chromium is not installed: scripts/chromium.sh"
    return found


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium with a fresh profile, closed afterwards."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_context(browser: Browser, base_url: str) -> BrowserContext:
    """A browser session of its own (cookies, tabs) against one server."""
    context = await browser.new_context(
        base_url=base_url, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(WAIT_MS)
    return context


def add_user(
    env: dict[str, str], name: str, *roles: str, email: str | None = None
) -> None:
    """``lobflows users add``, the password on standard input as an admin would."""
    args = ["users", "add", name, "--password-stdin"]
    for role in roles:
        args += ["--role", role]
    if email is not None:
        args += ["--email", email]
    added = support.cli(env, *args, stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stdout + added.stderr


async def sign_in(page: Page, name: str, *, path: str = "/") -> None:
    """Open `path` signed out, sign in on the page it sends to, and land there."""
    await page.goto(path)
    await page.wait_for_url(re.compile(r"/login\?next="))
    await page.get_by_label("User name").fill(name)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(re.compile(re.escape(path) + "$"))


class Screenshots:
    """Numbered full-page screenshots of one test's key steps."""

    def __init__(self, test_name: str) -> None:
        self.folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.taken = 0

    async def take(self, page: Page, step: str) -> Path:
        self.taken += 1
        path = self.folder / f"{self.taken:02d}-{step}.png"
        await page.screenshot(path=path, full_page=True)
        return path
