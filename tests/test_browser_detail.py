"""An order's detail page in a real browser: a snapshot, then only that order's changes.

The demo is served by daphne on the Redis channel layer (test_browser.py's
``Demo``); orders change in other processes. The page is rendered with the
newest event id of namespace ``shop`` and subscribes with ``where`` (its
order's pk) and ``since`` (that id). A change made after the render but
before the page subscribes (its client script held back until then) must
still reach the page, and changes to another order must not.
"""

from __future__ import annotations

import pytest

from tests.conftest import CHROMIUM_ARGS, chromium_executable
from tests.test_browser import Demo, demo

pytestmark = [pytest.mark.redis, pytest.mark.browser]

__all__ = ["demo"]  # the fixture, used by name

CREATE = (
    "from demo.shop.models import Order;"
    "mine = Order.objects.create(number='D-1', customer='Ada Lovelace', total='10.00');"
    "other = Order.objects.create(number='D-2', customer='Alan Turing', total='20.00');"
    "print(mine.pk, other.pk)"
)


def _set_status(demo: Demo, pk: int, status: str) -> None:
    demo.shell(
        "from demo.shop.models import Order;"
        f"o = Order.objects.get(pk={pk}); o.status = {status!r}; o.save()"
    )


def test_detail_page_streams_only_its_order_from_its_snapshot(demo: Demo) -> None:
    chromium = chromium_executable()
    sync_api = pytest.importorskip("playwright.sync_api")
    mine, other = (int(pk) for pk in demo.shell(CREATE).strip().splitlines()[-1].split())
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            held: list[str] = []

            def change_before_subscribing(route: object) -> None:
                # The page is rendered, its client not loaded yet: change both
                # orders now, in the gap between the snapshot and the subscription.
                if not held:
                    _set_status(demo, other, "paid")
                    _set_status(demo, mine, "paid")
                held.append("done")
                route.continue_()  # type: ignore[attr-defined]

            # The dashboard links each order to its page.
            page.goto(f"http://127.0.0.1:{demo.port}/")
            link = page.locator("#order-rows a", has_text="D-1")
            sync_api.expect(link).to_have_count(1, timeout=15_000)
            page.route("**/channels_events/events.js", change_before_subscribing)
            link.click()
            page.wait_for_url(f"**/orders/{mine}/")
            assert held, "the client script was loaded before the page rendered"
            # The snapshot said "new" (rendered before the changes) and a
            # rendered event id; the change in between arrives by replay.
            assert page.locator("#last-event").inner_text() != "none"
            sync_api.expect(page.locator("#status")).to_have_attribute(
                "data-state", "open", timeout=15_000
            )
            status = page.locator("#order-status")
            sync_api.expect(status).to_have_text("paid", timeout=10_000)
            entries = page.locator("#log > li")
            sync_api.expect(entries).to_have_count(1)

            # Live: the other order changes first, then this one; only this
            # one's change arrives (were the other's let through, it would
            # arrive first).
            _set_status(demo, other, "shipped")
            _set_status(demo, mine, "shipped")
            sync_api.expect(status).to_have_text("shipped", timeout=10_000)
            sync_api.expect(entries).to_have_count(2)
            pks = {entries.nth(i).get_attribute("data-pk") for i in range(entries.count())}
            assert pks == {str(mine)}

            # The page's own button changes the order through the view.
            page.click("#advance")
            sync_api.expect(status).to_have_text("delivered", timeout=10_000)
            sync_api.expect(page.locator("#advance")).to_be_disabled()
            sync_api.expect(entries).to_have_count(3)
        finally:
            browser.close()
