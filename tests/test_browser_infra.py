"""The headless-Chromium helper (tests/support/browser.py) that the HTML-report tests build on."""

from pathlib import Path

from support.browser import open_page

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def page(tmp_path: Path, body: str, head: str = "") -> Path:
    path = tmp_path / "page.html"
    path.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>t</title>{head}</head>'
        f"<body>{body}</body></html>",
        encoding="utf-8",
    )
    return path


def test_clean_page_has_no_errors_no_requests_and_a_screenshot(tmp_path, chromium):
    html = page(
        tmp_path,
        '<h1>Report</h1><p>All local.</p><img alt="dot" src="data:image/gif;base64,'
        'R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==">'
        '<script>document.title = "ok";</script>',
        head="<style>h1 { color: #234; }</style>",
    )
    shot = tmp_path / "shots" / "page.png"
    report = open_page(html, shot, width=800, browser=chromium)
    assert report.console_errors == []
    assert report.page_errors == []
    assert report.external_requests == []
    assert report.screenshot == shot
    assert shot.read_bytes()[:8] == PNG_MAGIC
    assert 0 < report.load_seconds < 10


def test_console_error_is_reported(tmp_path, chromium):
    report = open_page(page(tmp_path, '<script>console.error("boom")</script>'), browser=chromium)
    assert report.console_errors == ["boom"]
    assert report.page_errors == []
    assert report.screenshot is None


def test_external_request_is_recorded_and_blocked(tmp_path, chromium):
    report = open_page(page(tmp_path, '<img src="https://example.com/x.png">'), browser=chromium)
    assert report.external_requests == ["https://example.com/x.png"]
    # Blocked, not fetched: Chromium sees the aborted load, never the network's answer.
    assert report.console_errors == ["Failed to load resource: net::ERR_FAILED"]
    assert report.load_seconds < 10


def test_uncaught_exception_is_a_page_error(tmp_path, chromium):
    report = open_page(page(tmp_path, '<script>throw new TypeError("kaput")</script>'), browser=chromium)
    assert report.page_errors == ["TypeError: kaput"]
