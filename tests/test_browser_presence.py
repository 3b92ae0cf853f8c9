"""The dashboard's "watching now" list and its to-others form, in Chromium driven by Playwright.

The demo (daphne on Redis, test_browser.py's fixture) names each browser
session a guest: two browser contexts are two guests, two tabs of one
context are one. The form's own change comes back in its answer, not over
the tab's websocket, while the other tabs get it live.
"""

from __future__ import annotations

import pytest

from tests import test_browser
from tests.conftest import CHROMIUM_ARGS, chromium_executable
from tests.test_browser import Demo

# test_browser.py's fixture, used here under its own name.
demo = test_browser.demo

pytestmark = [pytest.mark.redis, pytest.mark.browser]

WAIT = 15_000


def test_dashboard_shows_who_is_watching_and_keeps_its_own_changes_to_others(demo: Demo) -> None:
    chromium = chromium_executable()
    sync_api = pytest.importorskip("playwright.sync_api")
    expect = sync_api.expect
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            url = f"http://127.0.0.1:{demo.port}/"
            first = browser.new_context()
            mine = first.new_page()
            mine.goto(url)
            expect(mine.locator("#status")).to_have_attribute("data-state", "open", timeout=WAIT)
            expect(mine.locator("#watchers > li")).to_have_count(1, timeout=WAIT)
            me = mine.locator("#watchers > li").first.inner_text()
            assert me.startswith("Guest "), me

            # Another browser: another guest, seen by both.
            second = browser.new_context()
            theirs = second.new_page()
            theirs.goto(url)
            expect(theirs.locator("#watchers > li")).to_have_count(2, timeout=WAIT)
            expect(mine.locator("#watchers > li")).to_have_count(2, timeout=WAIT)
            expect(mine.locator("#watcher-count")).to_have_text("(2)")

            # A second tab of the first browser is the same guest: still two.
            my_tab = first.new_page()
            my_tab.goto(url)
            expect(my_tab.locator("#watchers > li")).to_have_count(2, timeout=WAIT)
            expect(my_tab.locator("#watchers")).to_contain_text(me)

            # The form's order: its own tab shows it once, from the answer ...
            mine.fill("input[name=customer]", "Barbara Liskov")
            mine.fill("input[name=total]", "8.00")
            mine.click("button[type=submit]")
            row = mine.locator("tr", has=mine.locator("td", has_text="Barbara Liskov"))
            expect(row).to_have_count(1, timeout=WAIT)
            expect(mine.locator("#log > li")).to_have_count(1)
            expect(mine.locator("#log > li .log-origin")).to_have_text("this page")
            # ... and the other tabs, of this browser too, get it live.
            for page in (my_tab, theirs):
                entry = page.locator("#log > li").first
                expect(entry.locator(".log-payload")).to_contain_text(
                    "Barbara Liskov", timeout=WAIT
                )
                expect(entry.locator(".log-origin")).to_have_text("another page or process")
            # The event never came back to the tab that made it: the next event
            # it gets is one made elsewhere, and its log holds exactly the two.
            demo.shell(
                "from demo.shop.models import Order;"
                "Order.objects.create(number='B-2001', customer='Frances Allen', total='5.00')"
            )
            newest = mine.locator("#log > li").first
            expect(newest.locator(".log-payload")).to_contain_text("Frances Allen", timeout=WAIT)
            expect(mine.locator("#log > li")).to_have_count(2)

            # The other browser goes: the first one sees it leave.
            second.close()
            expect(mine.locator("#watchers > li")).to_have_count(1, timeout=WAIT)
            expect(mine.locator("#watchers")).to_have_text(me)
        finally:
            browser.close()
