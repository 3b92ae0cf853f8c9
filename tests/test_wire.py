"""Payloads that cannot travel or are too large: refused where the event is made.

Neither ever wedges publication.

What travels is what both JSON (to browsers) and msgpack (through the
channel layer and the history) carry. The first half checks the refusal
itself; the second, on the real Redis layers, that events dispatched after a
payload that cannot travel (from Python or from a browser's ``emit``) still
reach another process, and that an event that changed after its check costs
only itself.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from channels_events import Dispatcher, Event, EventTooLarge, InvalidPayload
from channels_events._hub import Hub, get_hub
from channels_events.consumers import EventStreamConsumer

TIMEOUT = 5.0
LAYERS = ["core.RedisChannelLayer", "pubsub.RedisPubSubChannelLayer"]


class Reading(Event):
    name = "twire::meter::read"
    meter: str
    value: int = 0


POISON = [
    pytest.param({"n": 2**64}, "payload['n'] is 18446744073709551616", id="int above 64 bits"),
    pytest.param({"n": -(2**63) - 1}, "payload['n'] is -9223372036854775809", id="int below"),
    pytest.param({"t": "\ud800"}, "payload['t'] holds a lone surrogate", id="lone surrogate"),
    pytest.param(
        {"rows": [{"ok": 1}, {"at": datetime.date(2026, 1, 2), "n": 10**30}]},
        "payload['rows'][1]['n'] is 1000000000000000000000000000000",
        id="nested, among values that convert",
    ),
    pytest.param({"m": {"key\udfff": 1}}, "payload['m'] has a key that holds", id="key"),
    pytest.param({"huge": 10**5000}, "an integer of 16610 bits", id="int with no repr"),
]


def nested(depth: int) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(depth):
        inner["a"] = {}
        inner = inner["a"]
    return payload


# --------------------------------------------------------------------------- the refusal


@pytest.mark.parametrize(("payload", "message"), POISON)
async def test_a_payload_that_cannot_travel_is_refused_before_any_listener_runs(
    payload: dict[str, Any], message: str
) -> None:
    dispatcher = Dispatcher()
    heard: list[Event] = []
    published: list[Event] = []
    dispatcher.connect(heard.append, r"twire::.*")
    dispatcher.add_publisher(published.append)

    with pytest.raises(InvalidPayload, match="'twire::x'") as info:
        dispatcher.dispatch("twire::x", payload)
    assert message in str(info.value)
    with pytest.raises(InvalidPayload, match="cannot travel"):
        await dispatcher.adispatch("twire::x", payload)
    with pytest.raises(InvalidPayload, match="cannot travel"):
        Event("twire::x", payload).envelope  # noqa: B018
    # Positive control: the same dispatcher takes the next event.
    dispatcher.dispatch("twire::after", {"n": 1})
    assert [event.name for event in heard] == ["twire::after"]
    assert [event.name for event in published] == ["twire::after"]


def test_a_typed_event_is_checked_when_its_envelope_is_made() -> None:
    with pytest.raises(InvalidPayload, match=r"payload\['value'\] is 18446744073709551616"):
        Reading(meter="m1", value=2**64).envelope  # noqa: B018
    with pytest.raises(InvalidPayload, match=r"payload\['meter'\] holds a lone surrogate"):
        Event("twire::meter::read", {"meter": "\udc80"}).envelope  # noqa: B018
    assert Reading(meter="m1", value=2**64 - 1).envelope["payload"]["value"] == 2**64 - 1


def test_values_at_the_edges_of_what_travels_are_kept() -> None:
    payload = {
        "top": 2**64 - 1,
        "bottom": -(2**63),
        "text": "naïve \U0001f600 \u00e9",
        "deep": nested(99),
    }
    event = Event("twire::x", payload)
    assert event.envelope["payload"] is payload  # plain data travels as it is, uncopied
    for text in (json.dumps(event.envelope), event.encoded):
        assert json.loads(text)["payload"] == payload
    with pytest.raises(InvalidPayload, match="more than 100 levels deep"):
        Event("twire::x", {"deep": nested(101)}).envelope  # noqa: B018
    with pytest.raises(InvalidPayload, match="more than 100 levels deep"):
        Event("twire::x", {"when": datetime.date(2026, 1, 1), "deep": nested(5000)}).envelope  # noqa: B018


def test_values_json_has_no_form_for_are_converted_once() -> None:
    payload = {
        "when": datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
        "total": decimal.Decimal("19.90"),
        "tags": ("a", "b"),
        "nan": float("nan"),
        1: "int key",
    }
    event = Event("twire::x", payload)
    assert event.payload is payload  # listeners in this process see the objects
    assert event.envelope["payload"] == {
        "when": "2026-01-02T03:04:05+00:00",
        "total": "19.90",
        "tags": ["a", "b"],
        "nan": None,
        "1": "int key",
    }


class NoText:
    def __str__(self) -> str:
        raise ValueError("no text")


def test_an_object_with_no_text_form_is_refused_where_it_is() -> None:
    with pytest.raises(InvalidPayload, match=r"payload\['a'\]\[0\] is a NoText with no text form"):
        Event("twire::x", {"a": [NoText()]}).envelope  # noqa: B018


def test_an_event_that_never_leaves_the_process_is_not_held_to_what_travels() -> None:
    dispatcher = Dispatcher()
    heard: list[Event] = []
    dispatcher.connect(heard.append, r"twire::.*")
    # No publisher: the payload never travels, so it is not checked.
    dispatcher.dispatch("twire::local", {"n": 2**64})
    assert [event.payload["n"] for event in heard] == [2**64]
    # Positive control: once a publisher takes the name, the same payload is refused.
    dispatcher.add_publisher(lambda event: None)
    with pytest.raises(InvalidPayload):
        dispatcher.dispatch("twire::local", {"n": 2**64})
    assert len(heard) == 1


# --------------------------------------------------------------------------- on Redis


ALIAS = "wire"


async def test_an_event_over_max_event_bytes_is_refused_before_any_listener_runs(
    settings: Any,
) -> None:
    settings.CHANNELS_EVENTS = {"MAX_EVENT_BYTES": 4096}
    dispatcher = Dispatcher()
    heard: list[Event] = []
    published: list[Event] = []
    dispatcher.connect(heard.append, r"twire::.*")
    dispatcher.add_publisher(published.append)
    big = {"pad": "x" * 4096}
    with pytest.raises(EventTooLarge, match=r"'twire::big' is 42\d\d bytes as JSON") as info:
        dispatcher.dispatch("twire::big", big)
    assert "MAX_EVENT_BYTES allows 4096" in str(info.value)
    assert isinstance(info.value, ValueError)
    with pytest.raises(EventTooLarge):
        await dispatcher.adispatch("twire::big", big)
    with pytest.raises(EventTooLarge):
        Event("twire::big", big).encoded  # noqa: B018
    # Just under the limit travels; so does the next event.
    overhead = len(Event("twire::fits", {"pad": ""}).encoded)
    fits = Event("twire::fits", {"pad": "x" * (4096 - overhead)})
    dispatcher.dispatch(fits)
    assert len(fits.encoded) == 4096
    dispatcher.dispatch("twire::after", {"n": 1})
    assert [event.name for event in heard] == ["twire::fits", "twire::after"]
    assert [event.name for event in published] == ["twire::fits", "twire::after"]


def test_the_default_max_event_bytes_leaves_room_under_daphnes_frame_limit() -> None:
    dispatcher = Dispatcher()
    dispatcher.add_publisher(lambda event: None)
    with pytest.raises(EventTooLarge, match="MAX_EVENT_BYTES allows 1000000"):
        dispatcher.dispatch("twire::big", {"pad": "x" * 1_000_000})
    # An event just under the limit, in a frame naming the most subscriptions
    # a connection may have, each with the longest id, fits in daphne's 1 MiB.
    overhead = len(Event("twire::big", {"pad": ""}).encoded)
    event = Event("twire::big", {"pad": "x" * (1_000_000 - overhead)})
    assert len(event.encoded) == 1_000_000
    from channels_events._frames import event_frame

    ids = tuple(f"{n:03d}" + "\u2603" * 61 for n in range(100))
    frame = event_frame(event, ids)
    assert frame is not None and len(frame.encode()) < 2**20


async def eventually(condition: Callable[[], Any], what: str) -> None:
    """Let the loop run until ``condition()`` holds; fail after TIMEOUT seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"{what} did not happen within {TIMEOUT}s")
        await asyncio.sleep(0.01)


@pytest.fixture(params=LAYERS)
def redis_layers(
    request: pytest.FixtureRequest, settings: Any, redis_url: str, redis_prefix: str
) -> str:
    """Configure a channels_redis layer under ALIAS (and as ``default``); return its backend."""
    config = {
        "BACKEND": "channels_redis." + request.param,
        "CONFIG": {"hosts": [redis_url], "prefix": redis_prefix},
    }
    settings.CHANNEL_LAYERS = {"default": config, ALIAS: config}
    return str(request.param)


@pytest.fixture
async def elsewhere(redis_layers: str) -> AsyncIterator[tuple[Hub, list[Event]]]:
    """Return the hub of a second 'process' on the Redis layer and what its listener heard."""
    other = Hub(dispatcher=Dispatcher(), alias=ALIAS)
    heard: list[Event] = []
    other.dispatcher.connect(heard.append, r"shop::.*")
    await other.attach()
    await eventually(lambda: "events.shop" in other.joined_groups, "joining events.shop")
    yield other, heard
    await other.stop()
    layer = get_channel_layer(ALIAS)
    close = getattr(layer, "close_pools", None)
    if close is not None:
        await close()


@pytest.fixture
async def here(elsewhere: tuple[Hub, list[Event]]) -> AsyncIterator[Hub]:
    """Return a publishing hub of its own on the Redis layer (never the process's hub)."""
    hub = Hub(dispatcher=Dispatcher(), alias=ALIAS)
    hub.dispatcher.add_publisher(hub.publish)
    await hub.attach(receive=False)
    yield hub
    await hub.stop()


def numbers(events: list[Event]) -> list[int]:
    return [int(event.payload["n"]) for event in events]


@pytest.mark.redis
async def test_events_after_a_payload_that_cannot_travel_still_reach_other_processes(
    here: Hub, elsewhere: tuple[Hub, list[Event]]
) -> None:
    _, heard = elsewhere
    ran: list[Event] = []
    here.dispatcher.connect(ran.append, r"shop::.*")
    here.dispatcher.dispatch("shop::tick", {"n": 1})
    await eventually(lambda: heard, "the first event arriving")
    for poison in ({"n": 2**64}, {"n": "\ud800"}, {"rows": [{"n": -(2**63) - 1}]}):
        with pytest.raises(InvalidPayload):
            here.dispatcher.dispatch("shop::tick", poison)
        with pytest.raises(InvalidPayload):
            await here.dispatcher.adispatch("shop::tick", poison)
    here.dispatcher.dispatch("shop::tick", {"n": 2})
    await here.dispatcher.adispatch("shop::tick", {"n": 3})
    await eventually(lambda: len(heard) >= 3, "the events after the poison arriving")
    assert numbers(heard) == [1, 2, 3]
    assert numbers(ran) == [1, 2, 3]


@pytest.mark.redis
async def test_an_event_too_large_is_neither_published_nor_recorded(
    settings: Any, here: Hub, elsewhere: tuple[Hub, list[Event]]
) -> None:
    settings.CHANNELS_EVENTS = {"MAX_EVENT_BYTES": 4096}
    _, heard = elsewhere
    first = here.dispatcher.dispatch("shop::tick", {"n": 1})
    await eventually(lambda: heard, "the first event arriving")
    with pytest.raises(EventTooLarge):
        here.dispatcher.dispatch("shop::tick", {"n": 2, "pad": "x" * 5000})
    with pytest.raises(EventTooLarge):
        await here.dispatcher.adispatch("shop::tick", {"n": 2, "pad": "x" * 5000})
    here.dispatcher.dispatch("shop::tick", {"n": 3})
    await eventually(lambda: len(heard) >= 2, "the event after the big one arriving")
    assert numbers(heard) == [1, 3]
    history = here.history
    assert history is not None
    replay = await history.after("shop", first.id)
    assert [envelope["payload"]["n"] for envelope in replay or []] == [3]


@pytest.mark.redis
async def test_an_event_the_layer_cannot_encode_costs_only_itself(
    here: Hub, elsewhere: tuple[Hub, list[Event]], caplog: pytest.LogCaptureFixture
) -> None:
    _, heard = elsewhere
    events = [Event("shop::tick", {"n": n}) for n in range(1, 7)]

    def spoil(event: Event) -> None:
        # Checked at dispatch, then changed in place by a listener.
        if event.payload["n"] == 4:
            event.payload["n"] = 2**64

    here.dispatcher.connect(spoil, r"shop::tick")
    for event in events:  # one go, on the hub's loop: one run of six
        here.dispatcher.dispatch(event)
    await eventually(lambda: len(heard) >= 5, "the five good events arriving")
    assert numbers(heard) == [1, 2, 3, 5, 6]
    assert here.unencodable == 1
    dropped = [r for r in caplog.records if "cannot encode" in r.getMessage()]
    assert len(dropped) == 1 and events[3].id in dropped[0].getMessage()
    # And publication goes on.
    here.dispatcher.dispatch("shop::tick", {"n": 7})
    await eventually(lambda: len(heard) >= 6, "the next event arriving")
    assert numbers(heard)[-1] == 7


def allow_all(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return True


def emit_shop(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    return name.startswith("shop::")


@pytest.mark.redis
async def test_a_browser_emit_that_cannot_travel_is_refused_and_emits_flow_on(
    settings: Any, elsewhere: tuple[Hub, list[Event]], caplog: pytest.LogCaptureFixture
) -> None:
    _, heard = elsewhere
    settings.CHANNELS_EVENTS = {
        "SUBSCRIBE_POLICY": f"{__name__}.allow_all",
        "EMIT_POLICY": f"{__name__}.emit_shop",
    }
    # This process's hub publishes the browser's emits, on the Redis layer.
    await get_hub().stop()
    ws = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    try:
        assert (await ws.connect(timeout=TIMEOUT))[0]
        assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "welcome"

        async def emit(payload: str) -> dict[str, Any]:
            frame = '{"type": "emit", "name": "shop::tick", "payload": ' + payload + "}"
            await ws.send_to(text_data=frame)
            answer: dict[str, Any] = await ws.receive_json_from(timeout=TIMEOUT)
            return answer

        assert (await emit('{"n": 1}'))["type"] == "emitted"
        await eventually(lambda: heard, "the first emit arriving")
        for poison in ('{"n": 18446744073709551616}', '{"n": "\\ud800"}'):
            answer = await emit(poison)
            assert answer["type"] == "error" and answer["code"] == "bad_request", answer
            assert "cannot travel" in answer["message"]
        assert (await emit('{"n": 2}'))["type"] == "emitted"
        await eventually(lambda: len(heard) >= 2, "the emit after the poison arriving")
        assert numbers(heard) == [1, 2]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await ws.disconnect(timeout=TIMEOUT)
        await get_hub().stop()


@pytest.mark.redis
async def test_a_browser_emit_over_max_event_bytes_is_too_large_and_emits_flow_on(
    settings: Any, elsewhere: tuple[Hub, list[Event]], caplog: pytest.LogCaptureFixture
) -> None:
    _, heard = elsewhere
    settings.CHANNELS_EVENTS = {
        "SUBSCRIBE_POLICY": f"{__name__}.allow_all",
        "EMIT_POLICY": f"{__name__}.emit_shop",
        "MAX_EVENT_BYTES": 4096,
    }
    await get_hub().stop()
    ws = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    try:
        assert (await ws.connect(timeout=TIMEOUT))[0]
        assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "welcome"

        async def emit(payload: dict[str, Any]) -> dict[str, Any]:
            await ws.send_json_to({"type": "emit", "name": "shop::tick", "payload": payload})
            answer: dict[str, Any] = await ws.receive_json_from(timeout=TIMEOUT)
            return answer

        assert (await emit({"n": 1}))["type"] == "emitted"
        await eventually(lambda: heard, "the first emit arriving")
        # Within MAX_FRAME_BYTES (64 KiB), over MAX_EVENT_BYTES.
        answer = await emit({"n": 9, "pad": "x" * 5000})
        assert answer["type"] == "error" and answer["code"] == "too_large", answer
        assert "MAX_EVENT_BYTES allows 4096" in answer["message"]
        assert (await emit({"n": 2}))["type"] == "emitted"
        await eventually(lambda: len(heard) >= 2, "the emit after the big one arriving")
        assert numbers(heard) == [1, 2]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        await ws.disconnect(timeout=TIMEOUT)
        await get_hub().stop()
