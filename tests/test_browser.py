"""The live dashboard in a real browser: Chromium driven by Playwright.

The page is served by daphne (the demo project, on the Redis channel layer);
orders are created and changed from other processes and show in the table and
the event log; the daphne process the page is connected to is killed and
started again, and the page must reconnect, catch up on what it missed and
keep updating. Needs Debian's Chromium (CHANNELS_EVENTS_CHROMIUM
or /usr/bin/chromium): skipped without it, except under CI=true.

Set CHANNELS_EVENTS_SCREENSHOT=docs/dashboard.png to save the screenshot the
docs show.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from demo.layer import shown_url
from tests.conftest import CHROMIUM_ARGS, chromium_executable

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.redis, pytest.mark.browser]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Demo:
    """The demo project's processes, sharing one SQLite file and one Redis prefix."""

    def __init__(self, tmp_path: Path, redis_url: str, prefix: str) -> None:
        self.port = _free_port()
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
            "DEMO_CHANNEL_LAYER": "redis",
            "REDIS_URL": redis_url,
            "REDIS_PREFIX": prefix,
            "PYTHONPATH": str(ROOT),
        }
        self.daphne: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "daphne.log"

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    def shell(self, code: str) -> str:
        return self.manage("shell", "-c", code)

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.daphne = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "asgi:application",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/orders/", timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"daphne did not start:\n{self.log.read_text()}")

    def kill(self) -> None:
        if self.daphne is not None and self.daphne.poll() is None:
            self.daphne.send_signal(signal.SIGKILL)
            self.daphne.wait(10)
        self.daphne = None


@pytest.fixture
def demo(tmp_path: Path, redis_url: str, redis_prefix: str) -> Iterator[Demo]:
    app = Demo(tmp_path, redis_url, redis_prefix)
    app.manage("migrate", "--noinput")
    app.start()
    try:
        yield app
    finally:
        app.kill()


def test_dashboard_updates_live_and_survives_a_server_restart(demo: Demo) -> None:
    chromium = chromium_executable()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(f"http://127.0.0.1:{demo.port}/")
            badge = page.locator("#status")
            sync_api.expect(badge).to_have_attribute("data-state", "open", timeout=15_000)
            # The page says which layer it hears, and has no warning to give on Redis.
            sync_api.expect(page.locator("#layer")).to_have_text(
                f"channel layer: {shown_url(demo.env['REDIS_URL'])}"
            )
            sync_api.expect(page.locator("#layer-warning")).to_have_count(0)

            # A row appears for an order created by another process.
            demo.shell(
                "from demo.shop.models import Order;"
                "Order.objects.create(number='B-1001', customer='Grace Hopper', total='42.00')"
            )
            row = page.locator("tr", has=page.locator("td", has_text="B-1001"))
            sync_api.expect(row).to_have_count(1, timeout=10_000)
            sync_api.expect(row.locator(".pill")).to_have_text("new")
            # The event log shows it, newest first, with its payload.
            newest = page.locator("#log > li").first
            sync_api.expect(newest).to_have_attribute("data-name", "shop::Order::created")
            sync_api.expect(newest.locator(".log-payload")).to_contain_text('"number":"B-1001"')
            sync_api.expect(newest.locator(".log-payload")).to_contain_text(
                '"customer":"Grace Hopper"'
            )
            sync_api.expect(newest.locator(".log-origin")).to_have_text("another page or process")
            sync_api.expect(newest.locator(".log-latency")).to_have_text(re.compile(r"^-?\d+ ms$"))

            # Its status changes when another process advances it.
            demo.shell(
                "from demo.shop.models import Order;"
                "o = Order.objects.get(number='B-1001'); o.status = 'paid'; o.save()"
            )
            sync_api.expect(row.locator(".pill")).to_have_text("paid", timeout=10_000)
            sync_api.expect(newest).to_have_attribute("data-name", "shop::Order::updated")
            sync_api.expect(newest.locator(".log-changes")).to_contain_text(
                'status: "new" → "paid"'
            )
            sync_api.expect(page.locator('.bar-row[data-status="paid"] .bar-count')).to_have_text(
                "1"
            )

            # The form on the page creates orders too.
            page.fill("input[name=customer]", "Katherine Johnson")
            page.fill("input[name=total]", "12.50")
            page.click("button[type=submit]")
            mine = page.locator("tr", has=page.locator("td", has_text="Katherine Johnson"))
            sync_api.expect(mine).to_have_count(1, timeout=10_000)
            # The page knows this event is its own: the view answered with its id.
            sync_api.expect(newest.locator(".log-payload")).to_contain_text("Katherine Johnson")
            sync_api.expect(newest.locator(".log-origin")).to_have_text("this page")
            sync_api.expect(page.locator("#log > li")).to_have_count(3)

            screenshot = os.environ.get("CHANNELS_EVENTS_SCREENSHOT")
            if screenshot:
                page.wait_for_timeout(1500)  # let the row highlight and bar transitions end
                page.screenshot(path=str(ROOT / screenshot))

            # A second page, which has received no event yet.
            fresh = browser.new_page()
            fresh.goto(f"http://127.0.0.1:{demo.port}/")
            fresh_badge = fresh.locator("#status")
            sync_api.expect(fresh_badge).to_have_attribute("data-state", "open", timeout=15_000)

            # Kill the server the page is connected to: the page notices ...
            demo.kill()
            sync_api.expect(badge).not_to_have_attribute("data-state", "open", timeout=10_000)
            # ... another process makes an order while it is away ...
            demo.shell(
                "from demo.shop.models import Order;"
                "Order.objects.create(number='B-1003', customer='Edsger Dijkstra', total='3.00')"
            )
            # ... and it comes back by itself once the server does.
            demo.start()
            sync_api.expect(badge).to_have_attribute("data-state", "open", timeout=30_000)
            # It resumed after the last event it saw (since): the server replayed the
            # missed event from its history, so the log shows it.
            missed = page.locator("tr", has=page.locator("td", has_text="B-1003"))
            sync_api.expect(missed).to_have_count(1, timeout=10_000)
            sync_api.expect(newest.locator(".log-payload")).to_contain_text('"number":"B-1003"')
            # The second page had seen no event: it resumed from the `last` its
            # subscription was answered with, so the missed event was replayed to it.
            sync_api.expect(fresh_badge).to_have_attribute("data-state", "open", timeout=30_000)
            sync_api.expect(
                fresh.locator("tr", has=fresh.locator("td", has_text="B-1003"))
            ).to_have_count(1, timeout=10_000)
            fresh_log = fresh.locator("#log > li")
            sync_api.expect(fresh_log).to_have_count(1)
            sync_api.expect(fresh_log.first.locator(".log-payload")).to_contain_text(
                '"number":"B-1003"'
            )

            demo.shell(
                "from demo.shop.models import Order;"
                "Order.objects.create(number='B-1002', customer='Alan Turing', total='7.00');"
                "Order.objects.filter(number='B-1001').get().delete()"
            )
            sync_api.expect(
                page.locator("tr", has=page.locator("td", has_text="B-1002"))
            ).to_have_count(1, timeout=10_000)
            sync_api.expect(row).to_have_count(0, timeout=10_000)
        finally:
            browser.close()
