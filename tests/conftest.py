"""Shared fixtures for the channels-events test suite."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
import redis

from channels_events import Dispatcher, Event, get_dispatcher

if TYPE_CHECKING:
    from tests.installed import Venv

REDIS_URL_ENV = "CHANNELS_EVENTS_TEST_REDIS_URL"
REDIS_SKIP_REASON = (
    "Redis not reachable: set CHANNELS_EVENTS_TEST_REDIS_URL (scripts/dev.py test does)"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def missing_tool(message: str) -> NoReturn:
    """Skip the running test because a tool is missing, or fail it under ``CI=true``."""
    if _in_ci():
        pytest.fail(f"CI=true, but {message}")
    pytest.skip(message)


CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_executable() -> str:
    """Return Debian's Chromium for Playwright: skip the test without it, fail under CI=true."""
    path = os.environ.get("CHANNELS_EVENTS_CHROMIUM") or "/usr/bin/chromium"
    if Path(path).exists():
        return path
    found = shutil.which("chromium")
    if found is None:
        missing_tool("Chromium is not installed (install Debian's chromium package)")
    return found


def _ci_failure_message() -> str:
    return f"CI=true but {REDIS_URL_ENV} is not set: Redis-backed tests must run in CI"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(REDIS_URL_ENV):
        return
    redis_items = [item for item in items if item.get_closest_marker("redis") is not None]
    if not redis_items:
        return
    if _in_ci():
        raise pytest.UsageError(_ci_failure_message())
    skip = pytest.mark.skip(reason=REDIS_SKIP_REASON)
    for item in redis_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        if _in_ci():
            pytest.fail(_ci_failure_message())
        pytest.skip(REDIS_SKIP_REASON)
    return url


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the checkout, once per session; return its path."""
    from tests.installed import build_wheel

    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """Return a fresh virtualenv with the wheel installed as the README says, once per session."""
    from tests.installed import make_venv

    return make_venv(tmp_path_factory.mktemp("installed") / "venv", wheel)


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A unique key prefix; every Redis key starting with it is deleted afterwards."""
    prefix = f"cetest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@pytest.fixture
def default_dispatcher() -> Iterator[Dispatcher]:
    """Yield the default dispatcher; disconnect whatever the test left connected to it."""
    dispatcher = get_dispatcher()
    before = set(dispatcher.registrations)
    yield dispatcher
    for registration in dispatcher.registrations:
        if registration not in before:
            dispatcher.disconnect(registration.callback, registration.pattern)


@pytest.fixture
def published() -> Iterator[list[Event]]:
    """Collect the events handed to publishers, that is, the ones leaving the process."""
    events: list[Event] = []

    def publisher(event: Event) -> None:
        events.append(event)

    dispatcher = get_dispatcher()
    dispatcher.add_publisher(publisher)
    yield events
    dispatcher.remove_publisher(publisher)
