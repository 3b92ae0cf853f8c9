"""Metrics, traces and the operations page, with real daphne processes on Redis.

The daphnes are those of ``tests/test_e2e.py`` (the demo project, which
mounts ``/metrics/`` and ``/ops/``). Model changes are made in a process of
their own, so every event crosses Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from channels_events import Dispatcher, Event, TaskOptions, listen
from channels_events._metrics import _noop, metrics
from tests import tracefile
from tests.test_e2e import (
    ROOT,
    Client,
    Cluster,
    Daphne,
    _clients,
    _welcomed,
    cluster,  # noqa: F401 - the fixture
)

DEADLINE = 15.0

# Saves an order inside a span of its own, in a process with the SDK's
# in-memory exporter; prints the pk and the spans it recorded.
TRACED_WRITER = """
import json
import sys

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

import django

django.setup()

from django.db import transaction

from tests.testapp.models import Order
from tests.tracefile import span_record

with trace.get_tracer("writer").start_as_current_span("save order"):
    with transaction.atomic():
        order = Order.objects.create(number=sys.argv[1], status="new", total="5.00")
spans = [span_record(span) for span in exporter.get_finished_spans()]
print(json.dumps({"pk": order.pk, "spans": spans}))
"""

# Makes a staff user and a session for it; prints the session key.
STAFF_SESSION = """
import django

django.setup()

from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.sessions.backends.db import SessionStore

user = get_user_model().objects.create_user("operator", password="x", is_staff=True)
session = SessionStore()
session[SESSION_KEY] = str(user.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = user.get_session_auth_hash()
session.save()
print(session.session_key)
"""


# --------------------------------------------------------------------------- helpers


def _get(url: str, cookie: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def _sample(text: str, name: str, **labels: str) -> float:
    """Return the value of one sample of Prometheus' text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        match = re.fullmatch(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = ",".join(sorted((match.group(2) or "").split(","))) if match.group(2) else ""
        if found == wanted:
            return float(match.group(3))
    return 0.0


async def _scrape(daphne: Daphne) -> str:
    status, body = await asyncio.to_thread(_get, f"{daphne.origin}/metrics/")
    assert status == 200, body[:500]
    return body


def _run(processes: Cluster, script: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        env=env or processes.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


# --------------------------------------------------------------------------- in process


def test_metrics_off_are_one_empty_function() -> None:
    """METRICS False: every metric call is the same empty function; True: the real ones."""
    with override_settings(CHANNELS_EVENTS={"METRICS": True}):
        assert metrics.enabled
        assert metrics.dispatched is not _noop
        assert metrics.delivered is not _noop
    with override_settings(CHANNELS_EVENTS={"METRICS": False}):
        assert not metrics.enabled
        for name in ("dispatched", "published", "received", "delivered", "dropped", "refused"):
            assert getattr(metrics, name) is _noop, name


def test_dispatch_counts_per_namespace() -> None:
    from prometheus_client import REGISTRY

    with override_settings(CHANNELS_EVENTS={"METRICS": True}):
        before = REGISTRY.get_sample_value(
            "channels_events_dispatched_total", {"namespace": "metered"}
        )
        from channels_events import dispatch

        dispatch("metered::thing::done", {})
        dispatch(Event("metered::thing::done", {}))
        after = REGISTRY.get_sample_value(
            "channels_events_dispatched_total", {"namespace": "metered"}
        )
    assert (after or 0) - (before or 0) == 2


def test_every_metric_has_a_row_in_the_docs_catalogue() -> None:
    from channels_events._metrics import CATALOGUE

    text = (ROOT / "docs" / "operations.md").read_text()
    for kind, name, _labels, _meaning in CATALOGUE:
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"| `{exposed}` | {kind} |" in text, name


def _value(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_background_listener_failures_and_refusals_are_counted() -> None:
    from channels_events import Dispatcher, drain, listen

    d = Dispatcher()
    release = threading.Event()

    @listen("metbg::fails", dispatcher=d, background=True)
    def fails(event: Event) -> None:
        raise RuntimeError("counted")

    @listen("metbg::blocked", dispatcher=d, background=True)
    def blocked(event: Event) -> None:
        release.wait(10)

    with override_settings(CHANNELS_EVENTS={"METRICS": True, "BACKGROUND_QUEUE_SIZE": 2}):
        assert drain(10)
        failures = _value("channels_events_listener_failures_total", namespace="metbg")
        dropped = _value("channels_events_dropped_total", cause="background_queue_full")
        d.dispatch("metbg::fails")
        assert drain(10)
        assert _value("channels_events_listener_failures_total", namespace="metbg") == failures + 1
        # Two calls fill the pool; the next three are refused.
        for _ in range(5):
            d.dispatch("metbg::blocked")
        release.set()
        assert drain(10)
        assert _value("channels_events_dropped_total", cause="background_queue_full") == dropped + 3
        # Only failures were counted as failures.
        assert _value("channels_events_listener_failures_total", namespace="metbg") == failures + 1


tasks_dispatcher = Dispatcher()


@listen("mettask::broken", dispatcher=tasks_dispatcher, task=TaskOptions(retries=1, backoff=0))
def broken_task_listener(event: Event) -> None:
    raise ValueError("a task listener that always fails")


def test_task_listener_retries_and_failures_are_counted() -> None:
    """Run by the test process's Tasks backend (ImmediateBackend): two tries, one retry."""
    with override_settings(CHANNELS_EVENTS={"METRICS": True}):
        retries = _value("channels_events_task_retries_total", namespace="mettask")
        final = _value("channels_events_task_failures_total", namespace="mettask")
        failures = _value("channels_events_listener_failures_total", namespace="mettask")
        tasks_dispatcher.dispatch("mettask::broken")
        assert _value("channels_events_task_retries_total", namespace="mettask") == retries + 1
        assert _value("channels_events_task_failures_total", namespace="mettask") == final + 1
        assert (
            _value("channels_events_listener_failures_total", namespace="mettask") == failures + 2
        )


# Counts events in prometheus_client's multiprocess mode and copies them at once.
MULTIPROCESS_CHILD = """
import django

django.setup()

from channels_events import dispatch
from channels_events._metrics import metrics

dispatch("multi::thing::done", {})
dispatch("multi::thing::done", {})
metrics.prometheus.multiprocess.sync()
print("ok")
"""


def test_multiprocess_mode_sums_processes(tmp_path: Path) -> None:
    """With PROMETHEUS_MULTIPROC_DIR, the counts of two processes are read as one sum."""
    from prometheus_client import CollectorRegistry, multiprocess

    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, "-c", MULTIPROCESS_CHILD],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))  # type: ignore[no-untyped-call]
    total = registry.get_sample_value("channels_events_dispatched_total", {"namespace": "multi"})
    assert total == 4


# --------------------------------------------------------------------------- daphne


@pytest.mark.redis
async def test_metrics_follow_events_through_daphne(cluster: Cluster) -> None:  # noqa: F811
    """Orders saved elsewhere move the daphne's received, delivered and age figures."""
    (daphne,) = await cluster.start("metrics")
    async with _clients() as clients:
        watcher = await Client.open("watcher", daphne)
        refused = await Client.open("refused", daphne)
        clients += [watcher, refused]
        await asyncio.gather(_welcomed(watcher), _welcomed(refused))
        answer = await watcher.subscribe("orders", r"shop::Order::.*")
        assert answer["type"] == "subscribed", answer
        answer = await refused.subscribe("bills", r"billing::.*")
        assert answer["code"] == "forbidden", answer

        before = await _scrape(daphne)
        assert _sample(before, "channels_events_connections") == 2
        assert _sample(before, "channels_events_subscriptions") == 1
        assert _sample(before, "channels_events_policy_refusals_total", policy="subscribe") == 1
        assert _sample(before, "channels_events_protocol_errors_total", code="forbidden") == 1

        for number in ("M-1", "M-2", "M-3"):
            await cluster.write_orders(number)
        await watcher.wait_for(lambda f: f.get("type") == "event", count=3)

        after = await _scrape(daphne)
        received = "channels_events_received_total"
        delivered = "channels_events_delivered_total"
        age = "channels_events_delivery_age_seconds_count"
        assert (
            _sample(after, received, namespace="shop") - _sample(before, received, namespace="shop")
            == 3
        ), after
        assert (
            _sample(after, delivered, namespace="shop")
            - _sample(before, delivered, namespace="shop")
            == 3
        ), after
        assert _sample(after, age, namespace="shop") - _sample(before, age, namespace="shop") == 3
        # Bounded labels: no event name or id in any sample.
        assert "Order::created" not in after
        await refused.close()
        deadline = time.monotonic() + DEADLINE
        while _sample(await _scrape(daphne), "channels_events_connections") != 1:
            assert time.monotonic() < deadline, "the closed connection is still counted"
            await asyncio.sleep(0.1)


@pytest.mark.redis
async def test_trace_crosses_processes_and_never_reaches_browsers(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A span around save() goes on in the daphne that writes the frame; the frame has no trace."""
    spans_file = tmp_path / "daphne-spans.jsonl"
    writer_env = dict(cluster.env)
    cluster.env["CE_E2E_TRACE_FILE"] = str(spans_file)
    (daphne,) = await cluster.start("traced")
    async with _clients() as clients:
        browser = await Client.open("browser", daphne)
        clients.append(browser)
        await _welcomed(browser)
        assert (await browser.subscribe("orders", r"shop::Order::.*"))["type"] == "subscribed"

        written = json.loads(
            await asyncio.to_thread(_run, cluster, TRACED_WRITER, "T-1", env=writer_env)
        )
        (frame,) = await browser.wait_for(lambda f: f.get("type") == "event")
        assert frame["event"]["payload"]["pk"] == written["pk"]

    by_name = {span["name"]: span for span in written["spans"]}
    root, publish = by_name["save order"], by_name["channels_events publish"]
    assert publish["trace_id"] == root["trace_id"]
    assert publish["parent_id"] == root["span_id"]

    deadline = time.monotonic() + DEADLINE
    names: dict[str, dict[str, Any]] = {}
    while {"channels_events write", "channels_events deliver"} - names.keys():
        assert time.monotonic() < deadline, f"daphne recorded {tracefile.read(spans_file)}"
        await asyncio.sleep(0.1)
        names = {span["name"]: span for span in tracefile.read(spans_file)}
    for name in ("channels_events write", "channels_events deliver"):
        assert names[name]["trace_id"] == root["trace_id"], names
        assert names[name]["parent_id"] == publish["span_id"], names

    # The browser saw the envelope only: no trace field, no trace or span id.
    raw = json.dumps(browser.frames)
    assert "trace" not in raw
    assert root["trace_id"] not in raw
    assert publish["span_id"] not in raw
    assert set(frame["event"]) == {"id", "name", "namespace", "payload", "timestamp"}


# --------------------------------------------------------------------------- the page


async def _emit_for(client: Client, seconds: float, stop: asyncio.Event) -> int:
    """Emit shop events from a websocket until ``stop`` or ``seconds``; return how many."""
    sent = 0
    deadline = time.monotonic() + seconds
    while not stop.is_set() and time.monotonic() < deadline and sent < 5000:
        await client.send({"type": "emit", "name": "shop::tick::sent", "payload": {"n": sent}})
        sent += 1
        await asyncio.sleep(0.08)  # under the connection's RATE_LIMIT
    return sent


@pytest.mark.redis
@pytest.mark.browser
async def test_operations_page_shows_live_figures(cluster: Cluster) -> None:  # noqa: F811
    """The staff page charts events of two processes while they flow; others get 403."""
    from tests.conftest import CHROMIUM_ARGS, chromium_executable

    chromium = chromium_executable()
    async_api = pytest.importorskip("playwright.async_api")
    cluster.env["CE_E2E_DEBUG"] = "1"  # static files: the page's JS and the client
    page_host, other = await cluster.start("page", "other")
    session = await asyncio.to_thread(_run, cluster, STAFF_SESSION)

    # Anonymous visitors are sent to log in; the page needs staff.
    status, body = await asyncio.to_thread(_get, f"{page_host.origin}/ops/")
    assert status == 200 and 'name="password"' in body, body[:300]
    status, body = await asyncio.to_thread(_get, f"{page_host.origin}/ops/", f"sessionid={session}")
    assert status == 200, body[:300]

    stop = asyncio.Event()
    async with _clients() as clients, async_api.async_playwright() as playwright:
        emitter = await Client.open("emitter", other)
        clients.append(emitter)
        await _welcomed(emitter)
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 900})
            await context.add_cookies(
                [{"name": "sessionid", "value": session, "url": page_host.origin}]
            )
            page = await context.new_page()
            logs: list[str] = []
            page.on("console", lambda message: logs.append(message.text))
            page.on("pageerror", lambda error: logs.append(str(error)))
            await page.goto(f"{page_host.origin}/ops/")
            flowing = asyncio.create_task(_emit_for(emitter, 40.0, stop))
            try:
                # Both processes report, and the shop's rate climbs above zero.
                await page.wait_for_function(
                    "document.querySelectorAll('#processes tr').length === 2",
                    timeout=DEADLINE * 1000,
                )
                await page.wait_for_function(
                    "Number((document.querySelector('#legend [data-namespace=\"shop\"] b')"
                    " || {}).textContent || 0) > 0",
                    timeout=DEADLINE * 1000,
                )
                total = page.locator("#total [data-field='dispatched']")
                first = float(await total.text_content() or 0)
                assert first > 0
                connections = page.locator("#total [data-field='connections']")
                # The page's own websocket and the emitter's.
                assert int(await connections.text_content() or 0) >= 2
                await page.wait_for_function(
                    "document.querySelectorAll('#recent li').length > 0", timeout=DEADLINE * 1000
                )
                await page.fill("#filter", r"shop::tick::.*")
                assert await page.locator("#recent li").count() > 0
                await page.fill("#filter", r"nothing::.*")
                await page.wait_for_function(
                    "document.querySelectorAll('#recent li').length === 0", timeout=5000
                )
                await page.fill("#filter", r".*")
                screenshot = os.environ.get("CHANNELS_EVENTS_OPS_SCREENSHOT")
                if screenshot:
                    await page.wait_for_timeout(3000)  # a few points on the chart
                    await page.screenshot(path=str(ROOT / screenshot), full_page=True)
            except Exception as exc:
                html = await page.inner_html("body")
                raise AssertionError(
                    f"{exc}\nconsole: {logs}\n{html[:3000]}\n{cluster.describe()}"
                ) from exc
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await flowing
        finally:
            await browser.close()
