"""Lost channel-layer messages: every websocket gets every event, or is told ``gap``.

In one process: messages with a jump in their numbering make the hub report
the loss (signal and counters) and catch the websockets up from the history,
in order and once, or send ``gap`` where no history covers it.

Across processes, on both Redis layers, with a throwaway redis-server of the
test's own: a publisher (``tests/hubproc.py``) dispatches numbered events to
a daphne with two websocket clients and to ``manage.py events listen`` while
Redis restarts, while Redis cuts the daphne's subscriber off at its output
buffer limit (or, for the core layer, its channel overflows its capacity),
and while the daphne is stopped with SIGSTOP. Each client must end with
every event, or with a ``gap`` frame; ``events listen`` and the daphne's log
must report the loss.

The runs are sized for the test command (seconds each). With
``CHANNELS_EVENTS_LOSS_FULL=1`` they take the sizes of the original report
instead (a 3 s Redis restart at 200 events/s, a burst of 5,000 10 KB events
against the default output buffer limit, a daphne stopped for 20 s with 12 KB
events), a minute or more each:

    CHANNELS_EVENTS_LOSS_FULL=1 .venv/bin/python -m pytest tests/test_loss.py \
        -s -k every_client --timeout 600
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from channels.testing import WebsocketCommunicator

from channels_events import Event, events_lost, get_hub
from channels_events._layer import BATCH_TYPE, EVENT_TYPE
from channels_events._loss import Loss
from channels_events.consumers import EventStreamConsumer
from tests.hubproc import HubProcess, hub_env
from tests.test_e2e import ROOT, Client, Daphne
from tests.test_hub_fault import RedisServer, free_port, redis_server_binary

TIMEOUT = 5.0
# Reconnections after ``lagged`` a client makes at most, as events.js would.
MAX_RESUMES = 30
OTHER = "elsewhere:1:abcdef01"


def allow_all(scope: dict[str, Any], namespace: str, pattern: str) -> bool:
    return True


# --------------------------------------------------------------------------- in one process


@pytest.fixture
async def connected(settings: Any) -> AsyncIterator[WebsocketCommunicator]:
    """A websocket on this process's hub (in-memory layer), subscribed to ``shop::.*``."""
    settings.CHANNELS_EVENTS = {"SUBSCRIBE_POLICY": f"{__name__}.allow_all"}
    await get_hub().stop()
    ws = WebsocketCommunicator(EventStreamConsumer.as_asgi(), "/ws/events/")
    connected, _ = await ws.connect(timeout=TIMEOUT)
    assert connected
    assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "welcome"
    await ws.send_json_to({"type": "subscribe", "id": "s", "pattern": r"shop::.*"})
    assert (await ws.receive_json_from(timeout=TIMEOUT))["type"] == "subscribed"
    try:
        yield ws
    finally:
        await ws.disconnect(timeout=TIMEOUT)
        await get_hub().stop()


def message(envelopes: list[dict[str, Any]], seq: int) -> dict[str, Any]:
    if len(envelopes) == 1:
        return {"type": EVENT_TYPE, "event": envelopes[0], "origin": OTHER, "seq": seq}
    return {"type": BATCH_TYPE, "events": envelopes, "origin": OTHER, "seq": seq}


@contextlib.contextmanager
def losses_heard() -> Iterator[list[dict[str, Any]]]:
    heard: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        heard.append({"sender": sender, **kwargs})

    events_lost.connect(receiver, weak=False)
    try:
        yield heard
    finally:
        events_lost.disconnect(receiver)


async def frames_until_quiet(ws: WebsocketCommunicator) -> list[dict[str, Any]]:
    """Return the frames that arrive until a ping's answer (the positive control)."""
    await ws.send_json_to({"type": "ping", "id": "end"})
    frames = []
    while True:
        frame = await ws.receive_json_from(timeout=TIMEOUT)
        if frame == {"type": "pong", "id": "end"}:
            return frames
        frames.append(frame)


async def test_a_jump_in_numbering_is_caught_up_from_the_history_in_order_and_once(connected):
    hub = get_hub()
    history = hub.history
    assert history is not None
    envelopes = [Event("shop::tick", {"n": n}).to_dict() for n in range(6)]
    # The other process recorded all six; messages 1-2 and 3 never arrived here.
    await history.append("shop", envelopes)
    before = (hub.losses, hub.lost_events)
    with losses_heard() as heard:
        await hub.receiver.handle(message(envelopes[:1], 0))
        await hub.receiver.handle(message(envelopes[4:6], 4))
        # The same message again (a publisher's retry) is not delivered twice.
        await hub.receiver.handle(message(envelopes[5:6], 5))
        frames = await frames_until_quiet(connected)

    assert [f["event"]["payload"]["n"] for f in frames] == [0, 1, 2, 3, 4, 5], frames
    assert all(f["subscriptions"] == ["s"] for f in frames)
    assert (hub.losses, hub.lost_events) == (before[0] + 1, before[1] + 3)
    assert heard == [
        {
            "sender": hub,
            "signal": events_lost,
            "namespace": "shop",
            "reason": "sequence",
            "missed": 3,
            "origin": OTHER,
        }
    ]


async def test_a_loss_the_history_cannot_cover_is_a_gap(connected):
    hub = get_hub()
    envelopes = [Event("shop::tick", {"n": n}).to_dict() for n in range(3)]
    # Not recorded: the history does not hold what was lost.
    with losses_heard() as heard:
        await hub.receiver.handle(message(envelopes[:1], 10))
        await hub.receiver.handle(message(envelopes[2:], 12))
        frames = await frames_until_quiet(connected)

    assert [f["type"] for f in frames] == ["event", "gap", "event"], frames
    assert frames[1] == {"type": "gap", "subscription": "s", "since": envelopes[0]["id"]}
    assert frames[2]["event"]["payload"]["n"] == 2
    assert [h["missed"] for h in heard] == [1]


async def test_a_checkpoint_shows_the_loss_of_a_publishers_last_messages(connected):
    hub = get_hub()
    history = hub.history
    assert history is not None
    envelopes = [Event("shop::tick", {"n": n}).to_dict() for n in range(3)]
    await history.append("shop", envelopes)
    checkpoint = {"type": BATCH_TYPE, "events": [], "origin": OTHER, "seq": 3, "namespace": "shop"}
    with losses_heard() as heard:
        await hub.receiver.handle(message(envelopes[:1], 0))
        # The last two events never came; the publisher's checkpoint says there were three.
        await hub.receiver.handle(checkpoint)
        await hub.receiver.handle(checkpoint)
        frames = await frames_until_quiet(connected)
    assert [f["event"]["payload"]["n"] for f in frames] == [0, 1, 2]
    assert [h["missed"] for h in heard] == [2]


async def test_events_before_a_gap_are_never_replayed_behind_newer_ones(connected):
    hub = get_hub()
    history = hub.history
    assert history is not None
    envelopes = [Event("shop::tick", {"n": n}).to_dict() for n in range(6)]
    await history.append("shop", envelopes)
    read = history.after

    async def unanswered(namespace: str, since: str) -> Any:
        raise ConnectionError("the history does not answer")

    await hub.receiver.handle(message(envelopes[:1], 0))
    history.after = unanswered  # type: ignore[method-assign]
    try:
        await hub.receiver.lost(Loss("shop", "reconnect"))
    finally:
        history.after = read  # type: ignore[method-assign]
    # Events 1-2 are what the gap told of; 3 comes next.
    await hub.receiver.handle(message(envelopes[3:4], 3))
    # A catch-up that reads the history from before the gap replays 4 and 5, not 1 and 2.
    await hub.receiver.lost(Loss("shop", "reconnect"))
    await hub.receiver.handle(message(envelopes[5:6], 5))
    frames = await frames_until_quiet(connected)
    assert [f["event"]["payload"]["n"] if f["type"] == "event" else f["type"] for f in frames] == [
        0,
        "gap",
        3,
        4,
        5,
    ]


async def test_a_new_origin_and_unnumbered_messages_are_no_loss(connected):
    hub = get_hub()
    envelopes = [Event("shop::tick", {"n": n}).to_dict() for n in range(3)]
    with losses_heard() as heard:
        # A process that started before this one subscribed: its first number is not 0.
        await hub.receiver.handle(message(envelopes[:1], 500))
        # A publisher that does not number its messages (PROTOCOL.md section 3).
        await hub.receiver.handle({"type": EVENT_TYPE, "event": envelopes[1], "origin": "x"})
        await hub.receiver.handle(message(envelopes[2:], 501))
        frames = await frames_until_quiet(connected)
    assert [f["event"]["payload"]["n"] for f in frames] == [0, 1, 2]
    assert heard == []


# --------------------------------------------------------------------------- across processes


@dataclass(frozen=True)
class Fault:
    """One run: what goes wrong, and the traffic around it."""

    name: str
    count: int
    interval: float
    payload_bytes: int
    #: Seconds after the first event reaches a client before the fault.
    after: float
    #: Seconds the fault lasts.
    lasts: float
    #: ``client-output-buffer-limit`` for pub/sub subscribers, if set.
    pubsub_limit: str | None = None


FAULTS = {
    # Redis restarts (nothing kept) while about 200 events a second go out.
    "restart": Fault(
        "restart", count=1200, interval=0.005, payload_bytes=100, after=1.0, lasts=3.0
    ),
    # A burst of 10 KB events while the daphne cannot read: Redis cuts its
    # subscriber off at a small output buffer (core: its channel overflows).
    "buffer": Fault(
        "buffer",
        count=900,
        interval=0.001,
        payload_bytes=10_000,
        after=0.5,
        lasts=2.5,
        pubsub_limit="pubsub 256kb 128kb 1",
    ),
    # The daphne (and the listening command) stopped with 12 KB events.
    "sigstop": Fault(
        "sigstop",
        count=800,
        interval=0.005,
        payload_bytes=12_000,
        after=1.0,
        lasts=3.0,
        pubsub_limit="pubsub 1mb 512kb 2",
    ),
}


FULL_FAULTS = {
    "restart": Fault(
        "restart", count=2400, interval=0.005, payload_bytes=100, after=3.0, lasts=3.0
    ),
    "buffer": Fault(
        "buffer",
        count=5000,
        interval=0.0,
        payload_bytes=10_000,
        after=0.5,
        lasts=0.0,
    ),
    "sigstop": Fault(
        "sigstop", count=6000, interval=0.005, payload_bytes=12_000, after=2.0, lasts=20.0
    ),
}
if os.environ.get("CHANNELS_EVENTS_LOSS_FULL") == "1":
    FAULTS = FULL_FAULTS


@pytest.fixture
def throwaway_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def _e2e_env(redis_url: str, prefix: str, layer: str, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["DJANGO_SETTINGS_MODULE"] = "tests.e2e_settings"
    env["PYTHONUNBUFFERED"] = "1"
    env["CE_E2E_DB"] = str(tmp_path / "e2e.sqlite3")
    env["CE_E2E_REDIS_URL"] = redis_url
    env["CE_E2E_PREFIX"] = prefix
    if layer == "pubsub":
        env["CE_E2E_HUB_LAYER"] = "pubsub"
    env.pop("REDIS_URL", None)
    return env


def _migrate(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _start_listen(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[Any], list[Any]]:
    """Start ``manage.py events listen``: events to listen.out, reports to listen.err."""
    files = [(tmp_path / "listen.out").open("w"), (tmp_path / "listen.err").open("w")]
    listen = subprocess.Popen(
        [sys.executable, "manage.py", "events", "listen", r"shop::tick", "--timeout", "90"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=files[0],
        stderr=files[1],
    )
    return listen, files


def _finished(client: Client) -> bool:
    """Return whether the client got the publisher's last event."""
    return any(
        f.get("type") == "event" and f["event"]["payload"].get("last") for f in client.frames
    )


def _lagged_after(client: Client, kept: int) -> int | None:
    """Return the index of the first ``lagged`` frame from ``kept`` on, or None."""
    frames = client.frames
    return next((i for i in range(kept, len(frames)) if frames[i].get("type") == "lagged"), None)


async def _until_last(client: Client, timeout: float, kept: int = 0) -> None:
    """Wait until the client has the last event or is told ``lagged``, or ``timeout`` passes.

    Only frames from ``kept`` on count as ``lagged``: the ones before are
    what the client kept of its earlier connections.
    """
    deadline = time.monotonic() + timeout
    while not _finished(client) and _lagged_after(client, kept) is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or client.reader.done():
            return
        client._arrived.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(client._arrived.wait(), remaining)


async def _resume_after_lagged(client: Client, daphne: Daphne, kept: int) -> tuple[Client, int]:
    """Do what events.js does after ``lagged``: reconnect, subscribe with ``since``.

    The frames up to the first ``lagged`` after the first ``kept`` are kept
    as this client's (the JS client stops reading there); the new
    connection's follow them. Return it and how many frames are kept.
    """
    first = _lagged_after(client, kept)
    assert first is not None
    before = client.frames[: first + 1]
    seen = [f["event"]["id"] for f in before if f.get("type") == "event"]
    await client.close()
    again = await Client.open(client.name, daphne)
    frame: dict[str, Any] = {"type": "subscribe", "id": "s", "pattern": r"shop::tick"}
    if seen:
        frame["since"] = seen[-1]
    await again.send(frame)
    again.frames[:0] = before
    return again, len(before)


def _kinds(client: Client) -> list[str]:
    """Return the client's frames in short: event numbers and other frame types."""
    return [
        str(f["event"]["payload"]["n"]) if f.get("type") == "event" else str(f.get("type"))
        for f in client.frames
    ]


def _numbers(client: Client) -> list[int]:
    return [int(f["event"]["payload"]["n"]) for f in client.events()]


def _pause(*procs: subprocess.Popen[Any]) -> None:
    for proc in procs:
        os.kill(proc.pid, signal.SIGSTOP)


def _resume(*procs: subprocess.Popen[Any]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)


@pytest.mark.redis
@pytest.mark.parametrize("layer", ["core", "pubsub"])
@pytest.mark.parametrize("fault", sorted(FAULTS))
async def test_every_client_gets_every_event_or_gap(
    fault: str, layer: str, throwaway_redis: RedisServer, tmp_path: Path
) -> None:
    run = FAULTS[fault]
    prefix = f"celoss-{fault}-{layer}"
    env = _e2e_env(throwaway_redis.url, prefix, layer, tmp_path)
    migrate = await asyncio.to_thread(_migrate, env)
    assert migrate.returncode == 0, migrate.stderr
    if run.pubsub_limit:
        admin = redis.Redis.from_url(throwaway_redis.url)
        admin.config_set("client-output-buffer-limit", run.pubsub_limit)
        admin.close()
    daphne = Daphne("daphne", env, tmp_path)
    listen, listen_files = _start_listen(env, tmp_path)
    publisher: HubProcess | None = None
    clients: list[Client] = []
    try:
        await daphne.wait_ready(time.monotonic() + 30)
        for name in ("one", "two"):
            client = await Client.open(name, daphne)
            clients.append(client)
            assert (await client.subscribe("s", r"shop::tick"))["type"] == "subscribed"
        publisher = HubProcess(
            "publisher",
            "send",
            [
                "--name",
                "shop::tick",
                "--count",
                str(run.count),
                "--numbered",
                "--interval",
                str(run.interval),
                "--payload",
                json.dumps({"pad": "x" * run.payload_bytes}),
                # Kept running, as a daphne or a worker is, for its checkpoints.
                "--linger",
                "8",
            ],
            hub_env(throwaway_redis.url, prefix, layer),
        )
        await clients[0].wait_for(lambda f: f.get("type") == "event")
        await asyncio.sleep(run.after)
        if fault == "restart":
            throwaway_redis.kill()
            await asyncio.sleep(run.lasts)
            throwaway_redis.start()
        elif run.lasts:
            _pause(daphne.proc, listen)
            await asyncio.sleep(run.lasts)
            _resume(daphne.proc, listen)

        unresumed: dict[str, bool] = {}
        for index, client in enumerate(clients):
            kept = 0
            # A replay larger than BUFFER_BYTES is cut short with ``lagged``
            # again: each resume brings about BUFFER_BYTES of it.
            for _ in range(MAX_RESUMES):
                await _until_last(client, 30, kept)
                if _lagged_after(client, kept) is None:
                    break
                client, kept = await _resume_after_lagged(client, daphne, kept)
                clients[index] = client
            # Told it lagged, and out of resumes: what it missed is not owed.
            unresumed[client.name] = _lagged_after(client, kept) is not None
        assert publisher.wait_exit(60) == 0, publisher.describe()
        # Catching up runs ahead of live events: once the last is there, so is the rest.
    finally:
        if publisher is not None:
            publisher.kill()
        _resume(daphne.proc, listen)
        for client in clients:
            await client.close()
        daphne.stop()
        if listen.poll() is None:
            listen.kill()
        listen.wait(10)
        for file in listen_files:
            file.close()

    log = daphne.log.read_text(errors="replace")
    reported = (tmp_path / "listen.err").read_text(errors="replace")
    listened = [
        json.loads(line)["payload"]["n"]
        for line in (tmp_path / "listen.out").read_text().splitlines()
        if line.startswith("{")
    ]
    listen_lost = run.count - len(set(listened))
    lines = [f"[{fault}/{layer}] events listen: {listen_lost} lost"]
    for client in clients:
        got = _numbers(client)
        gaps = [f for f in client.frames if f.get("type") == "gap"]
        # A catch-up larger than BUFFER_BYTES is cut short for the client with
        # ``lagged``; it resumes with ``since``, as events.js does, and then
        # gets what it lagged behind by.
        lagged = [f for f in client.frames if f.get("type") == "lagged"]
        missing = sorted(set(range(run.count)) - set(got))
        duplicates = len(got) - len(set(got))
        lines.append(
            f"  client {client.name}: {len(missing)} of {run.count} missing, "
            f"{duplicates} duplicate(s), {len(gaps)} gap frame(s), {len(lagged)} lagged"
        )
        assert duplicates == 0, lines
        assert not missing or gaps or unresumed[client.name], "\n".join([*lines, log[-3000:]])
        # Events from one publisher stay in order, the caught-up ones included.
        disorder = next((i for i in range(1, len(got)) if got[i] < got[i - 1]), None)
        assert disorder is None, (lines, got[max(0, disorder - 5) : disorder + 5], _kinds(client))
        # The last event arrives, unless it was among those the client was told it missed.
        assert _finished(client) or gaps, lines
    print("\n".join(lines))
    if listen_lost:
        assert "Lost events" in reported, (lines, reported[-2000:])
    # The fault made the daphne lose messages, and it said so (the hook's log line).
    assert "Lost channel-layer messages" in log, (lines, log[-3000:])
