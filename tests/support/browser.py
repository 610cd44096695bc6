"""Open a local HTML file in headless Chromium and report what a person's browser would have seen.

Not a test module: the browser tests import it (``from support.browser import open_page``) and share one browser
through the ``chromium`` fixture.

The browser is Debian's ``chromium`` at /usr/bin/chromium (``.ci/run`` installs it with apt), driven by
the PyPI package ``playwright`` through ``executable_path``; ``playwright install`` is never run. As root,
on a machine whose network is closed, Chromium is started headless with the sandbox, GPU, QUIC and every
background service (first-run, component updates, sync, background networking) turned off; every page opens
in a new browser context, which shares no cookies, storage or cache with another.

Nothing is fetched from the network: every request whose URL is not ``file:``, ``data:``, ``blob:`` or
``about:`` (nor to 127.0.0.1 / localhost) is recorded as external and aborted at once (a WebSocket to
such a host is closed before it connects), so a page that reaches out shows up in the report instead of
making a test wait.

Load time is read from the Navigation Timing API in the page
(``performance.getEntriesByType("navigation")[0]``: ``loadEventEnd - startTime``, i.e. from navigation
start to the end of the ``load`` event); if the page has no such entry, the wall-clock time of
``page.goto(..., wait_until="load")`` measured with ``time.perf_counter`` is used instead.

Console errors and uncaught page errors are those seen until the screenshot is taken (or until ``load``
when none is asked for); an error thrown later by a timer is not waited for. Chromium reports a blocked
external resource as a console error too ("Failed to load resource: net::ERR_FAILED").
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
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
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
TIMEOUT_MS = 30_000
VIEWPORT_HEIGHT = 800


class PageReport(BaseModel):
    console_errors: list[str]
    page_errors: list[str]
    external_requests: list[str]
    load_seconds: float
    screenshot: Path | None


def chromium_available() -> bool:
    """True when /usr/bin/chromium is executable and the ``playwright`` package imports."""
    return (
        CHROMIUM.is_file()
        and os.access(CHROMIUM, os.X_OK)
        and importlib.util.find_spec("playwright") is not None
    )


def is_external(url: str) -> bool:
    """A URL the page should never need: anything but file/data/blob/about and loopback."""
    parts = urlsplit(url)
    if parts.scheme.lower() in LOCAL_SCHEMES:
        return False
    return (parts.hostname or "").lower() not in LOCAL_HOSTS


@contextlib.contextmanager
def launch() -> Iterator["Browser"]:
    """One headless Chromium for many pages (a test session's fixture); each page gets a fresh context."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(html: Path, screenshot: Path | None = None, *, width: int = 1280, browser: "Browser | None" = None) -> PageReport:
    """Open ``html`` (as a file:// URL) in headless Chromium, wait for ``load`` and report.

    ``screenshot``: where to write a full-page PNG (parent folders are made), or None for none.
    ``width``: the viewport's width in CSS pixels (height 800; the screenshot covers the whole page).
    ``browser``: a running browser from ``launch()``; without one, a browser is started for this page alone.
    """
    if browser is None:
        with launch() as started:
            return open_page(html, screenshot, width=width, browser=started)

    html = Path(html).resolve()
    console_errors: list[str] = []
    page_errors: list[str] = []
    external: list[str] = []

    def on_request(request) -> None:
        if is_external(request.url):
            external.append(request.url)

    def route(route) -> None:
        if is_external(route.request.url):
            route.abort()
        else:
            route.continue_()

    def route_ws(ws) -> None:
        if is_external(ws.url):
            external.append(ws.url)
            ws.close()  # never connected: no lookup, no handshake
        else:
            ws.connect_to_server()

    def on_page_error(err) -> None:
        page_errors.append(f"{err.name}: {err.message}" if err.name else err.message)

    context = browser.new_context(viewport={"width": width, "height": VIEWPORT_HEIGHT})
    try:
        context.set_default_timeout(TIMEOUT_MS)
        context.route("**/*", route)
        context.route_web_socket("**/*", route_ws)
        context.on("request", on_request)
        page = context.new_page()
        page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", on_page_error)

        start = time.perf_counter()
        page.goto(html.as_uri(), wait_until="load")
        wall = time.perf_counter() - start
        nav_ms = page.evaluate(
            """() => {
                const e = performance.getEntriesByType("navigation")[0];
                return e && e.loadEventEnd > 0 ? e.loadEventEnd - e.startTime : null;
            }"""
        )
        load_seconds = nav_ms / 1000 if nav_ms is not None else wall

        if screenshot is not None:
            screenshot = Path(screenshot)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
    finally:
        context.close()

    return PageReport(
        console_errors=console_errors,
        page_errors=page_errors,
        external_requests=list(dict.fromkeys(external)),
        load_seconds=load_seconds,
        screenshot=screenshot,
    )
