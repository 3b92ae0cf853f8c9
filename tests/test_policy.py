"""Tests for channels_events._policy: loading the hooks, and what they decide on a connection.

The worked examples are the ones a project writes: a namespace per user,
events a user may see because they own the object, and staff-only events.
"""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Any
from unittest.mock import ANY

import pytest
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ImproperlyConfigured

from channels_events import Event, connect, disconnect, dispatch
from channels_events._policy import Policy, get_policy
from channels_events.consumers import EventStreamConsumer
from tests.test_consumers import (
    SHORT,
    TIMEOUT,
    OrderFeed,
    Streams,
    expect_error,
    expect_event,
    finish,
    heard_only,
    open_feed,
    receive,
    subscribe,
)

HERE = __name__
ALICE = SimpleNamespace(id=7, is_authenticated=True, is_staff=False)
BOB = SimpleNamespace(id=8, is_authenticated=True, is_staff=False)
STAFF = SimpleNamespace(id=1, is_authenticated=True, is_staff=True)

#: What the recording policies were asked: (hook, *arguments).
calls: list[tuple[Any, ...]] = []

NOT_CALLABLE = 42


def _user(scope: dict[str, Any]) -> Any:
    return scope.get("user") or AnonymousUser()


# -- recording policies ---------------------------------------------------------


def record_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    calls.append(("subscribe", scope, namespace, pattern))
    return namespace == "shop"


async def arecord_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    calls.append(("subscribe", scope, namespace, pattern))
    return namespace == "shop"


def record_emit(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    calls.append(("emit", scope, name, payload))
    return _user(scope).is_authenticated and name.startswith("shop::cart::")


async def arecord_emit(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    calls.append(("emit", scope, name, payload))
    return _user(scope).is_authenticated and name.startswith("shop::cart::")


def record_receive(scope: dict[str, Any], event: Event) -> bool:
    calls.append(("receive", scope, event))
    return True


# -- the worked examples --------------------------------------------------------


def own_namespace(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    """Let each user subscribe to ``user-<id>``, their own namespace, and nothing else."""
    user = _user(scope)
    return bool(user.is_authenticated) and namespace == f"user-{user.id}"


def open_shop(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return namespace == "shop"


def owned(scope: dict[str, Any], event: Event) -> bool:
    """Send only the objects the connection's user owns (and public announcements)."""
    payload = event.payload
    return payload.get("public") is True or payload.get("owner") == _user(scope).id


async def aowned(scope: dict[str, Any], event: Event) -> bool:
    payload = event.payload
    return payload.get("public") is True or payload.get("owner") == _user(scope).id


def staff_subscribe(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    """Open ``shop`` to everyone and ``audit`` to staff only."""
    if namespace == "audit":
        return bool(_user(scope).is_staff)
    return namespace == "shop"


def staff_receive(scope: dict[str, Any], event: Event) -> bool:
    """Keep events marked ``staff_only`` from everyone but staff."""
    return not event.payload.get("staff_only") or bool(_user(scope).is_staff)


# -- failing policies -----------------------------------------------------------


class PolicyFailed(Exception):
    """Raised by the failing test policies."""


def broken(*args: Any) -> bool:
    raise PolicyFailed("policy failed")


async def abroken(*args: Any) -> bool:
    raise PolicyFailed("async policy failed")


def broken_on_secrets(scope: dict[str, Any], event: Event) -> bool:
    if event.payload.get("secret"):
        raise PolicyFailed("receive policy failed")
    return True


async def abroken_on_secrets(scope: dict[str, Any], event: Event) -> bool:
    if event.payload.get("secret"):
        raise PolicyFailed("async receive policy failed")
    return True


# -- fixtures -------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_calls() -> Any:
    calls.clear()
    yield
    calls.clear()


@pytest.fixture
def configure(settings: Any) -> Any:
    """Set CHANNELS_EVENTS to exactly the given values (no policy by default)."""

    def apply(**values: Any) -> None:
        settings.CHANNELS_EVENTS = dict(values)

    apply()
    return apply


@pytest.fixture
async def streams(configure: Any) -> Any:
    opened = Streams()
    yield opened
    await opened.close()


@pytest.fixture
def policy_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """Return a function listing the policy failures logged so far."""
    caplog.set_level(logging.ERROR, logger="channels_events.consumers")

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "channels_events.consumers"]

    return logged


# -- loading --------------------------------------------------------------------


async def test_without_policies_nothing_is_allowed_and_everything_is_received(configure):
    policy = get_policy()
    scope = {"type": "websocket", "user": STAFF}
    assert await policy.may_subscribe(scope, "shop", "shop::.*") is False
    assert await policy.may_emit(scope, "shop::x", {}) is False
    assert policy.may_receive_now(scope, Event("shop::x")) is True


@pytest.mark.parametrize("prefix", ["", "a"])
async def test_sync_and_async_policies_get_their_arguments(configure, prefix):
    configure(
        SUBSCRIBE_POLICY=f"{HERE}.{prefix}record_subscribe",
        EMIT_POLICY=f"{HERE}.{prefix}record_emit",
    )
    policy = get_policy()
    scope = {"type": "websocket", "user": ALICE}
    assert await policy.may_subscribe(scope, "shop", "shop::Order::.*") is True
    assert await policy.may_subscribe(scope, "billing", "billing::.*") is False
    assert await policy.may_emit(scope, "shop::cart::added", {"sku": 1}) is True
    assert await policy.may_emit(scope, "shop::Order::created", {}) is False
    assert calls == [
        ("subscribe", scope, "shop", "shop::Order::.*"),
        ("subscribe", scope, "billing", "billing::.*"),
        ("emit", scope, "shop::cart::added", {"sku": 1}),
        ("emit", scope, "shop::Order::created", {}),
    ]


async def test_sync_receive_policy_answers_at_once_and_async_one_is_awaited(configure):
    mine = Event("shop::Order::created", {"owner": ALICE.id})
    theirs = Event("shop::Order::created", {"owner": BOB.id})
    scope = {"type": "websocket", "user": ALICE}
    configure(RECEIVE_POLICY=f"{HERE}.owned")
    policy = get_policy()
    assert policy.may_receive_now(scope, mine) is True
    assert policy.may_receive_now(scope, theirs) is False
    configure(RECEIVE_POLICY=f"{HERE}.aowned")
    policy = get_policy()
    verdict = policy.may_receive_now(scope, mine)
    assert inspect.isawaitable(verdict)
    assert await verdict is True
    verdict = policy.may_receive_now(scope, theirs)
    assert inspect.isawaitable(verdict)
    assert await verdict is False


def test_policies_may_be_given_as_callables(configure):
    configure(SUBSCRIBE_POLICY=open_shop, RECEIVE_POLICY=owned)
    policy = get_policy()
    assert policy.subscribe is open_shop
    assert policy.receive is owned


def test_get_policy_is_reloaded_after_a_settings_change(configure):
    configure(SUBSCRIBE_POLICY=f"{HERE}.open_shop")
    first = get_policy()
    assert get_policy() is first
    assert first.subscribe is open_shop
    configure(SUBSCRIBE_POLICY=f"{HERE}.own_namespace")
    second = get_policy()
    assert second is not first
    assert second.subscribe is own_namespace
    assert isinstance(second, Policy)


@pytest.mark.parametrize("setting", ["SUBSCRIBE_POLICY", "RECEIVE_POLICY", "EMIT_POLICY"])
@pytest.mark.parametrize("path", [f"{HERE}.no_such_policy", "tests.no_such_module.policy"])
def test_an_unimportable_policy_path_is_improperly_configured(configure, setting, path):
    configure(**{setting: path})
    with pytest.raises(ImproperlyConfigured, match=setting) as raised:
        get_policy()
    assert repr(path) in str(raised.value)


def test_a_policy_path_that_is_not_callable_is_improperly_configured(configure):
    configure(SUBSCRIBE_POLICY=f"{HERE}.NOT_CALLABLE")
    with pytest.raises(ImproperlyConfigured, match="not callable"):
        get_policy()


async def test_an_unimportable_policy_fails_the_connection(configure):
    configure(SUBSCRIBE_POLICY=f"{HERE}.no_such_policy")
    communicator = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    with pytest.raises(ImproperlyConfigured, match="SUBSCRIBE_POLICY"):
        await communicator.connect(timeout=SHORT)


# -- on a connection --------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "a"])
async def test_subscribe_policy_gets_scope_namespace_and_pattern(configure, streams, prefix):
    configure(SUBSCRIBE_POLICY=f"{HERE}.{prefix}record_subscribe")
    ws = await streams.open(user=ALICE)
    assert await subscribe(ws, "a", "shop::Order::.*") == {
        "type": "subscribed",
        "id": "a",
        "namespace": "shop",
        "last": ANY,
    }
    await ws.send_json_to({"type": "subscribe", "id": "b", "pattern": r"billing::invoice::\d+"})
    await expect_error(ws, "forbidden", "b")
    assert [call[2:] for call in calls] == [
        ("shop", "shop::Order::.*"),
        ("billing", r"billing::invoice::\d+"),
    ]
    scope = calls[0][1]
    assert scope["type"] == "websocket"
    assert scope["path"] == "/ws/events/"
    assert scope["user"] is ALICE


async def test_subscribe_policy_is_not_asked_about_refused_patterns(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.record_subscribe")
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": ".*"})
    await expect_error(ws, "invalid_pattern", "a")
    await subscribe(ws, "b", "shop::.*")
    assert [call[2:] for call in calls] == [("shop", "shop::.*")]


@pytest.mark.parametrize("prefix", ["", "a"])
async def test_emit_policy_gets_scope_name_and_payload(configure, streams, prefix):
    configure(
        SUBSCRIBE_POLICY=f"{HERE}.open_shop",
        EMIT_POLICY=f"{HERE}.{prefix}record_emit",
    )
    seen: list[Event] = []
    connect(seen.append, "shop::.*")
    try:
        member = await streams.open(user=ALICE)
        anonymous = await streams.open(user=AnonymousUser())
        await member.send_json_to(
            {"type": "emit", "name": "shop::cart::added", "payload": {"sku": 3}}
        )
        emitted = await receive(member)
        assert emitted["type"] == "emitted"
        await member.send_json_to({"type": "emit", "name": "shop::Order::created", "payload": {}})
        await expect_error(member, "forbidden")
        await anonymous.send_json_to(
            {"type": "emit", "name": "shop::cart::added", "payload": {"sku": 4}}
        )
        await expect_error(anonymous, "forbidden")
    finally:
        disconnect(seen.append)
    assert [(e.id, e.name, e.payload) for e in seen] == [
        (emitted["id"], "shop::cart::added", {"sku": 3})
    ]
    assert [call[2:] for call in calls] == [
        ("shop::cart::added", {"sku": 3}),
        ("shop::Order::created", {}),
        ("shop::cart::added", {"sku": 4}),
    ]
    assert calls[0][1]["user"] is ALICE


async def test_a_namespace_per_user(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.own_namespace")
    alice = await streams.open(user=ALICE)
    bob = await streams.open(user=BOB)
    anonymous = await streams.open()
    assert (await subscribe(alice, "me", "user-7::.*"))["namespace"] == "user-7"
    await alice.send_json_to({"type": "subscribe", "id": "bob", "pattern": "user-8::.*"})
    await expect_error(alice, "forbidden", "bob")
    await subscribe(bob, "me", "user-8::notifications::.*")
    await anonymous.send_json_to({"type": "subscribe", "id": "x", "pattern": "user-None::.*"})
    await expect_error(anonymous, "forbidden", "x")
    to_alice = dispatch("user-7::notifications::new", {"text": "hi Alice"})
    to_bob = dispatch("user-8::notifications::new", {"text": "hi Bob"})
    assert (await expect_event(alice, to_alice.name, ["me"]))["event"]["id"] == to_alice.id
    assert (await expect_event(bob, to_bob.name, ["me"]))["event"]["id"] == to_bob.id
    # Markers dispatched now come next: nobody got the other's event.
    dispatch("user-7::marker")
    dispatch("user-8::notifications::marker")
    await expect_event(alice, "user-7::marker", ["me"])
    await expect_event(bob, "user-8::notifications::marker", ["me"])
    for ws in (alice, bob, anonymous):
        assert await ws.receive_nothing()


@pytest.mark.parametrize("receive_policy", ["owned", "aowned"])
async def test_receive_policy_sends_only_the_objects_the_user_owns(
    configure, streams, receive_policy
):
    configure(SUBSCRIBE_POLICY=f"{HERE}.open_shop", RECEIVE_POLICY=f"{HERE}.{receive_policy}")
    alice = await streams.open(user=ALICE)
    bob = await streams.open(user=BOB)
    for ws in (alice, bob):
        await subscribe(ws, "orders", "shop::Order::.*")
        await subscribe(ws, "all", "shop::.*")
    first = dispatch("shop::Order::created", {"pk": 1, "owner": ALICE.id})
    second = dispatch("shop::Order::created", {"pk": 2, "owner": BOB.id})
    third = dispatch("shop::Order::updated", {"pk": 1, "owner": ALICE.id})
    dispatch("shop::Order::created", {"pk": 3})
    last = dispatch("shop::announcement", {"public": True})
    got = {}
    for name, ws, count in (("alice", alice, 3), ("bob", bob, 2)):
        got[name] = [(await receive(ws))["event"]["id"] for _ in range(count)]
        assert await ws.receive_nothing()
    assert got == {
        "alice": [first.id, third.id, last.id],
        "bob": [second.id, last.id],
    }


async def test_receive_policy_is_asked_once_per_event_per_connection(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.open_shop", RECEIVE_POLICY=f"{HERE}.record_receive")
    first = await streams.open(user=ALICE)
    second = await streams.open(user=BOB)
    for ws in (first, second):
        await subscribe(ws, "a", "shop::.*")
        await subscribe(ws, "b", "shop::Order::.*")
    event = dispatch("shop::Order::created")
    await expect_event(first, event.name, ["a", "b"])
    await expect_event(second, event.name, ["a", "b"])
    asked = [(call[1]["user"], call[2]) for call in calls]
    assert len(asked) == 2
    assert {id(user) for user, _ in asked} == {id(ALICE), id(BOB)}
    assert all(seen is not None and seen.id == event.id for _, seen in asked)


async def test_staff_only_events(configure, streams):
    configure(SUBSCRIBE_POLICY=f"{HERE}.staff_subscribe", RECEIVE_POLICY=f"{HERE}.staff_receive")
    staff = await streams.open(user=STAFF)
    member = await streams.open(user=ALICE)
    anonymous = await streams.open()
    await subscribe(staff, "audit", "audit::.*")
    for ws in (member, anonymous):
        await ws.send_json_to({"type": "subscribe", "id": "audit", "pattern": "audit::.*"})
        await expect_error(ws, "forbidden", "audit")
    for ws in (staff, member, anonymous):
        await subscribe(ws, "shop", "shop::.*")
    login = dispatch("audit::login::failed", {"username": "mallory"})
    refund = dispatch("shop::Order::refunded", {"pk": 1, "staff_only": True})
    public = dispatch("shop::Order::created", {"pk": 2})
    assert [(await receive(staff))["event"]["id"] for _ in range(3)] == [
        login.id,
        refund.id,
        public.id,
    ]
    for ws in (member, anonymous):
        assert (await expect_event(ws, public.name, ["shop"]))["event"]["id"] == public.id
    for ws in (staff, member, anonymous):
        assert await ws.receive_nothing()


# -- failing policies -------------------------------------------------------------


@pytest.mark.parametrize("name", ["broken", "abroken"])
async def test_a_subscribe_policy_that_raises_refuses_and_is_logged(
    configure, streams, policy_errors, name
):
    configure(SUBSCRIBE_POLICY=f"{HERE}.{name}")
    ws = await streams.open()
    await ws.send_json_to({"type": "subscribe", "id": "a", "pattern": "shop::.*"})
    await expect_error(ws, "forbidden", "a")
    [record] = policy_errors()
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is PolicyFailed
    # A consumer of the server's own gets the event; the refused connection does not.
    feed = await open_feed(OrderFeed)
    try:
        dispatch("shop::Order::created")
        assert (await feed.receive_json_from(timeout=TIMEOUT))["name"] == "shop::Order::created"
        assert await ws.receive_nothing()
    finally:
        await finish(feed)
    await ws.send_json_to({"type": "ping"})
    assert await receive(ws) == {"type": "pong"}


@pytest.mark.parametrize("name", ["broken", "abroken"])
async def test_an_emit_policy_that_raises_refuses_and_is_logged(
    configure, streams, policy_errors, name
):
    configure(EMIT_POLICY=f"{HERE}.{name}")
    seen: list[Event] = []
    connect(seen.append, "shop::.*")
    try:
        ws = await streams.open()
        await ws.send_json_to({"type": "emit", "name": "shop::cart::added", "payload": {}})
        await expect_error(ws, "forbidden")
        await heard_only(seen, "shop::marker")
    finally:
        disconnect(seen.append)
    [record] = policy_errors()
    assert record.exc_info is not None
    assert record.exc_info[0] is PolicyFailed


async def test_an_async_receive_policy_that_raises_skips_the_event_and_is_logged(
    configure, streams, policy_errors
):
    configure(SUBSCRIBE_POLICY=f"{HERE}.open_shop", RECEIVE_POLICY=f"{HERE}.abroken_on_secrets")
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    dispatch("shop::Order::created", {"secret": True})
    after = dispatch("shop::Order::created", {"pk": 2})
    assert (await expect_event(ws, after.name, ["a"]))["event"]["id"] == after.id
    [record] = policy_errors()
    assert "shop::Order::created" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is PolicyFailed


async def test_a_sync_receive_policy_that_raises_skips_the_event_and_is_logged(
    configure, streams, policy_errors
):
    configure(SUBSCRIBE_POLICY=f"{HERE}.open_shop", RECEIVE_POLICY=f"{HERE}.broken_on_secrets")
    ws = await streams.open()
    await subscribe(ws, "a", "shop::.*")
    dispatch("shop::Order::created", {"secret": True})
    after = dispatch("shop::Order::created", {"pk": 2})
    frame = await ws.receive_json_from(timeout=SHORT)
    assert frame["type"] == "event"
    assert frame["event"]["id"] == after.id
    [record] = policy_errors()
    assert record.exc_info is not None
    assert record.exc_info[0] is PolicyFailed
