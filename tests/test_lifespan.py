"""HubMiddleware and the ASGI lifespan: the hub starts and stops around the application's own.

Each test plays the server's half of a real lifespan exchange: it calls the
middleware with a ``lifespan`` scope and ``receive``/``send`` callables, as
uvicorn and hypercorn do, against the process's hub on the in-memory layer
of ``tests.settings``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.routing import ProtocolTypeRouter
from django.core.asgi import get_asgi_application

from channels_events import HubMiddleware, dispatch, get_hub

TIMEOUT = 5.0
NAMESPACE = "lifespan"
GROUP = f"events.{NAMESPACE}"
STARTUP = {"type": "lifespan.startup"}
SHUTDOWN = {"type": "lifespan.shutdown"}

Message = dict[str, Any]


@pytest.fixture(autouse=True)
async def stopped_hub() -> AsyncIterator[None]:
    # The process's hub: an earlier test may have left it running on another loop.
    await get_hub().stop()
    yield
    await get_hub().stop()


class Server:
    """The server's half of one lifespan conversation."""

    def __init__(self, app: Any) -> None:
        self.inbox: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []
        #: How many events still waited to be published when each answer came.
        self.queued_at: dict[str, int] = {}
        self._arrived = asyncio.Event()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        self.task = asyncio.get_running_loop().create_task(
            HubMiddleware(app)(scope, self.inbox.get, self.send)
        )

    async def send(self, message: Message) -> None:
        self.queued_at[message["type"]] = get_hub().queued
        self.sent.append(message)
        self._arrived.set()

    async def tell(self, message: Message, answer: str) -> Message:
        """Send the app ``message``; return its answer, which must be of type ``answer``."""
        count = len(self.sent)
        await self.inbox.put(message)
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while len(self.sent) == count:
            if self.task.done():
                self.task.result()  # raises what the middleware raised
                pytest.fail(f"the middleware returned without answering {message}")
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                pytest.fail(f"no answer to {message} within {TIMEOUT}s")
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        reply = self.sent[count]
        assert reply["type"] == answer, reply
        return reply

    async def finished(self) -> None:
        await asyncio.wait_for(self.task, TIMEOUT)


async def group_member() -> tuple[Any, str]:
    """Return the in-memory layer and a channel in the test namespace's group."""
    layer = get_channel_layer()
    channel: str = await layer.new_channel()
    await layer.group_add(GROUP, channel)
    return layer, channel


async def names_received(layer: Any, channel: str, count: int) -> list[str]:
    names: list[str] = []
    while len(names) < count:
        message = await asyncio.wait_for(layer.receive(channel), TIMEOUT)
        envelopes = message["events"] if "events" in message else [message["event"]]
        names.extend(envelope["name"] for envelope in envelopes)
    return names


async def http_only(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app for HTTP alone."""


async def returns_at_once(scope: Any, receive: Any, send: Any) -> None:
    """An app that ignores every scope."""


async def receives_then_raises(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    raise RuntimeError("this app does not do lifespan")


APPS_WITHOUT_LIFESPAN: dict[str, Callable[[], Any]] = {
    "channels router": lambda: ProtocolTypeRouter({"http": http_only}),
    "django": get_asgi_application,
    "returns at once": lambda: returns_at_once,
    "raises after startup": lambda: receives_then_raises,
}


@pytest.mark.parametrize("make_app", APPS_WITHOUT_LIFESPAN.values(), ids=APPS_WITHOUT_LIFESPAN)
async def test_lifespan_is_answered_for_an_app_without_it_and_the_hub_flushed(
    make_app: Callable[[], Any],
) -> None:
    layer, channel = await group_member()
    hub = get_hub()
    assert not hub.receiving
    server = Server(make_app())

    await server.tell(STARTUP, "lifespan.startup.complete")
    assert hub.receiving
    assert hub.loop is asyncio.get_running_loop()

    # A burst queued just before shut-down goes out before it is answered.
    names = [f"{NAMESPACE}::burst::{i}" for i in range(500)]
    for name in names:
        dispatch(name, {})
    await server.tell(SHUTDOWN, "lifespan.shutdown.complete")
    await server.finished()

    assert [message["type"] for message in server.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert server.queued_at["lifespan.shutdown.complete"] == 0
    assert not hub.receiving
    assert await names_received(layer, channel, len(names)) == names


async def test_an_app_that_handles_lifespan_gets_every_message_inside_the_hubs_run() -> None:
    layer, channel = await group_member()
    hub = get_hub()
    seen: list[tuple[str, bool]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append((message["type"], hub.receiving))
            if message["type"] == "lifespan.startup":
                dispatch(f"{NAMESPACE}::app::started", {})
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                dispatch(f"{NAMESPACE}::app::stopping", {})
                await send({"type": "lifespan.shutdown.complete"})
                return

    server = Server(app)
    await server.tell(STARTUP, "lifespan.startup.complete")
    assert await names_received(layer, channel, 1) == [f"{NAMESPACE}::app::started"]
    await server.tell(SHUTDOWN, "lifespan.shutdown.complete")
    await server.finished()

    # The hub ran before the app's start-up and until after its shut-down.
    assert seen == [("lifespan.startup", True), ("lifespan.shutdown", True)]
    assert [message["type"] for message in server.sent] == [
        "lifespan.startup.complete",
        "lifespan.shutdown.complete",
    ]
    assert not hub.receiving
    assert await names_received(layer, channel, 1) == [f"{NAMESPACE}::app::stopping"]


async def test_a_failed_startup_reaches_the_server_and_stops_the_hub() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    server = Server(app)
    reply = await server.tell(STARTUP, "lifespan.startup.failed")
    await server.finished()
    assert reply["message"] == "no database"
    assert server.sent == [reply]
    assert not get_hub().receiving


async def test_an_app_that_fails_after_answering_raises_to_the_server() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise RuntimeError("shut-down went wrong")

    server = Server(app)
    await server.tell(STARTUP, "lifespan.startup.complete")
    assert get_hub().receiving
    await server.inbox.put(SHUTDOWN)
    with pytest.raises(RuntimeError, match="shut-down went wrong"):
        await server.finished()
    assert not get_hub().receiving


async def test_without_lifespan_the_hub_starts_at_the_first_connection() -> None:
    # Daphne sends no lifespan events: an HTTP or websocket scope starts the hub.
    hub = get_hub()
    assert not hub.receiving
    called: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["type"])

    await HubMiddleware(app)({"type": "http"}, None, None)
    assert called == ["http"]
    assert hub.receiving
    assert hub.loop is asyncio.get_running_loop()


class PoolWatchingServer(Server):
    """A server that notes, with each answer, how many background calls were pending."""

    def __init__(self, app: Any) -> None:
        self.pending_at: dict[str, int] = {}
        super().__init__(app)

    async def send(self, message: Message) -> None:
        from channels_events._background import get_pool

        self.pending_at[message["type"]] = get_pool().pending
        await super().send(message)


async def test_shutdown_finishes_background_listeners_first() -> None:
    import threading

    from channels_events import get_dispatcher, listen
    from channels_events._background import get_pool

    release = threading.Event()
    done: list[str] = []

    @listen(f"{NAMESPACE}::background", dispatcher=get_dispatcher(), background=True)
    def slow(event: Any) -> None:
        release.wait(TIMEOUT)
        done.append(event.name)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("this app does not do lifespan")

    try:
        server = PoolWatchingServer(app)
        await server.tell(STARTUP, "lifespan.startup.complete")
        dispatch(f"{NAMESPACE}::background", {})
        assert get_pool().pending == 1  # positive control: the call still waits
        asyncio.get_running_loop().call_later(0.1, release.set)
        await server.tell(SHUTDOWN, "lifespan.shutdown.complete")
        await server.finished()
    finally:
        release.set()
        get_dispatcher().disconnect(slow)
    # The answer went out only after the queued call had run.
    assert done == [f"{NAMESPACE}::background"]
    assert server.pending_at["lifespan.shutdown.complete"] == 0
