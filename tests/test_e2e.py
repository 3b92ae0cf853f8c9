"""End-to-end tests: real daphne processes, real websockets, Redis in between.

Each test starts daphne serving ``asgi:application`` with
``tests.e2e_settings`` (the demo project plus a ``channels_redis`` core layer
under the test's key prefix, a SQLite file shared by the test's processes,
and ``tests.testapp.models.Order`` observed in namespace ``shop``). Browser
clients connect with the ``websockets`` library; model changes are made in a
separate Python process, so every event crosses Redis.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
SETTINGS_MODULE = "tests.e2e_settings"
START_TIMEOUT = 20.0
EVENT_TIMEOUT = 10.0
# After the last expected frame, wait this long for duplicates or strays.
QUIET_PERIOD = 1.0
STOP_TIMEOUT = 5.0
# Long enough for two 5 s blocking receives of channels_redis to time out.
IDLE_PERIOD = 12.0
ORDER_PATTERN = r"shop::Order::.*"
DAPHNE = (sys.executable, "-m", "daphne", "-b", "127.0.0.1")

Frame = dict[str, Any]


class MissingEvents(AssertionError):
    """An expected ``event`` frame did not arrive in time."""


class ConnectionDropped(AssertionError):
    """The server closed a websocket that should have stayed open."""


# Run in a separate process: create an order, update it, and create one more
# in a transaction that rolls back. Prints the order's pk as JSON.
WRITER_SCRIPT = """
import json
import sys
import time

import django

django.setup()

from django.db import transaction

from tests.testapp.models import Order

number = sys.argv[1]
with transaction.atomic():
    order = Order.objects.create(number=number, status="new", total="19.90", secret_note="s3")
if "--update" in sys.argv:
    # Let the first event go out on its own channel-layer message.
    time.sleep(0.3)
    with transaction.atomic():
        order.status = "paid"
        order.save()
if "--rollback" in sys.argv:
    try:
        with transaction.atomic():
            Order.objects.create(number=number + "-rolled-back")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
print(json.dumps({"pk": order.pk}))
"""


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, limit: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within STOP_TIMEOUT."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(STOP_TIMEOUT)


class Daphne:
    """A daphne process serving ``asgi:application`` on a free port of 127.0.0.1."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log = logs / f"{name}.log"
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [*DAPHNE, "-p", str(self.port), "asgi:application"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str = "/ws/events/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def describe(self) -> str:
        return f"daphne {self.name} (pid {self.pid}, exit {self.proc.poll()}):\n{_tail(self.log)}"

    async def wait_ready(self, deadline: float) -> None:
        """Wait until the port accepts TCP connections and answers a GET with HTTP."""
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.describe()}\nexited before serving")
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", self.port), 1.0
                )
            except (OSError, asyncio.TimeoutError):
                pass
            else:
                try:
                    writer.write(
                        f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                        "Connection: close\r\n\r\n".encode()
                    )
                    await writer.drain()
                    status = await asyncio.wait_for(reader.readline(), 2.0)
                    if status.startswith(b"HTTP/1."):
                        return
                except (OSError, asyncio.TimeoutError):
                    pass
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
            if time.monotonic() > deadline:
                pytest.fail(f"{self.describe()}\ndid not answer HTTP within {START_TIMEOUT}s")
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        try:
            _stop(self.proc)
        finally:
            self._log_file.close()


class Cluster:
    """The processes of one test: their environment, the database, the daphnes."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.daphnes: list[Daphne] = []

    def _run(self, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def migrate(self) -> None:
        done = self._run(["manage.py", "migrate", "--noinput", "-v", "0"], timeout=60)
        assert done.returncode == 0, f"migrate failed:\n{done.stdout}\n{done.stderr}"

    async def write_orders(self, number: str, *flags: str) -> int:
        """Save orders in a process of their own (see WRITER_SCRIPT); return the pk."""
        done = await asyncio.to_thread(self._run, ["-c", WRITER_SCRIPT, number, *flags], timeout=30)
        assert done.returncode == 0, f"writer failed:\n{done.stdout}\n{done.stderr}"
        return int(json.loads(done.stdout.strip().splitlines()[-1])["pk"])

    async def start(self, *names: str) -> list[Daphne]:
        started = []
        for name in names:
            started.append(Daphne(name, self.env, self.logs))
            self.daphnes.append(started[-1])
        deadline = time.monotonic() + START_TIMEOUT
        await asyncio.gather(*(daphne.wait_ready(deadline) for daphne in started))
        return started

    def stop(self) -> None:
        for daphne in self.daphnes:
            daphne.stop()

    def describe(self) -> str:
        return "\n".join(daphne.describe() for daphne in self.daphnes)


@pytest.fixture
async def cluster(redis_url: str, redis_prefix: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    env["PYTHONUNBUFFERED"] = "1"
    env["CE_E2E_DB"] = str(tmp_path / "e2e.sqlite3")
    env["CE_E2E_REDIS_URL"] = redis_url
    env["CE_E2E_PREFIX"] = redis_prefix
    env.pop("REDIS_URL", None)
    cluster = Cluster(env, tmp_path)
    cluster.migrate()
    try:
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------- clients


class Client:
    """A websocket client that records every frame it receives."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.frames: list[Frame] = []
        self.closed: BaseException | None = None
        self._arrived = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, name: str, daphne: Daphne, path: str = "/ws/events/") -> Client:
        ws = await connect(daphne.url(path), origin=daphne.origin, open_timeout=EVENT_TIMEOUT)  # type: ignore[arg-type]
        return cls(name, ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.frames.append(json.loads(message))
                self._arrived.set()
        except ConnectionClosed as exc:
            self.closed = exc
        finally:
            self._arrived.set()

    async def send(self, frame: Frame) -> None:
        await self.ws.send(json.dumps(frame))

    async def wait_for(
        self,
        predicate: Callable[[Frame], bool],
        count: int = 1,
        error: type[AssertionError] = AssertionError,
    ) -> list[Frame]:
        """Wait until ``count`` received frames satisfy ``predicate``; return them."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        while True:
            found = [frame for frame in self.frames if predicate(frame)]
            if len(found) >= count:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.reader.done():
                raise error(
                    f"{self.name}: {len(found)}/{count} expected frames "
                    f"(closed: {self.closed!r}); got {self.frames}"
                )
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def subscribe(self, sid: str, pattern: str) -> Frame:
        """Send ``subscribe``; return the answer (``subscribed`` or ``error``) for ``sid``."""
        await self.send({"type": "subscribe", "id": sid, "pattern": pattern})
        (answer,) = await self.wait_for(
            lambda f: f.get("type") in {"subscribed", "error"} and f.get("id") == sid
        )
        return answer

    async def wait_event(self, name: str, pk: int) -> Frame:
        """Wait for the ``event`` frame of event ``name`` about order ``pk``."""
        (frame,) = await self.wait_for(_is_event(name, pk), error=MissingEvents)
        return frame

    def events(self) -> list[Frame]:
        return [frame for frame in self.frames if frame.get("type") == "event"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


async def _welcomed(client: Client) -> Frame:
    (welcome,) = await client.wait_for(lambda f: f.get("type") == "welcome")
    assert client.frames[0] is welcome, f"{client.name}: first frame {client.frames[0]}"
    assert welcome["protocol"] == 1
    assert isinstance(welcome["connection"], str) and welcome["connection"]
    return welcome


def _is_event(name: str, pk: int) -> Callable[[Frame], bool]:
    def predicate(frame: Frame) -> bool:
        if frame.get("type") != "event":
            return False
        event = frame.get("event") or {}
        return event.get("name") == name and (event.get("payload") or {}).get("pk") == pk

    return predicate


@contextlib.asynccontextmanager
async def _clients() -> AsyncIterator[list[Client]]:
    opened: list[Client] = []
    try:
        yield opened
    finally:
        await asyncio.gather(*(client.close() for client in opened))


# --------------------------------------------------------------------------- Redis clients


def _socket_ports(pid: int) -> set[int]:
    """Return the local TCP ports of the sockets process ``pid`` holds (Linux /proc)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
            for line in lines:
                columns = line.split()
                if len(columns) > 9 and columns[9] in inodes:
                    ports.add(int(columns[1].rsplit(":", 1)[1], 16))
    return ports


def _redis_clients(admin: redis.Redis, pid: int) -> tuple[int, int]:
    """Return (Redis clients whose address is a socket of ``pid``, all clients but ours)."""
    own = admin.client_id()
    clients = [c for c in admin.client_list() if int(c["id"]) != own]
    ports = _socket_ports(pid)
    mine = [c for c in clients if int(c["addr"].rsplit(":", 1)[1]) in ports]
    return len(mine), len(clients)


def _check_order_event(frame: Frame, name: str, pk: int, sid: str) -> dict[str, Any]:
    assert frame["subscriptions"] == [sid], frame
    event = frame["event"]
    assert event["name"] == name
    assert event["namespace"] == "shop"
    assert isinstance(event["id"], str) and event["id"]
    assert isinstance(event["timestamp"], str) and event["timestamp"]
    payload: dict[str, Any] = event["payload"]
    assert payload["model"] == "testapp.order"
    assert payload["pk"] == pk
    # Secret-looking fields never leave the process (PROTOCOL.md section 7).
    assert "secret_note" not in payload["fields"], payload
    return payload


# --------------------------------------------------------------------------- tests


async def _subscribe_orders(client: Client, sid: str = "orders") -> None:
    answer = await client.subscribe(sid, ORDER_PATTERN)
    assert answer == {"type": "subscribed", "id": sid, "namespace": "shop", "last": ANY}, answer


async def _refused(client: Client) -> None:
    answer = await client.subscribe("bills", r"billing::.*")
    assert answer["type"] == "error", answer
    assert answer["code"] == "forbidden", answer
    assert answer["id"] == "bills", answer


@pytest.mark.parametrize("hub_layer", ["core", "pubsub"])
async def test_model_events_reach_every_daphne_exactly_once(
    cluster: Cluster, hub_layer: str
) -> None:
    """A create and an update in a third process reach two daphnes, once each, in order.

    With ``pubsub``, every process's hub uses a pub/sub layer of its own while
    consumers keep the core layer, as docs/processes.md suggests for fan-out.
    """
    if hub_layer == "pubsub":
        cluster.env["CE_E2E_HUB_LAYER"] = "pubsub"
    one, two = await cluster.start("one", "two")
    async with _clients() as clients:
        for daphne in (one, two):
            for role in ("orders", "refused", "idle"):
                clients.append(await Client.open(f"{role}@{daphne.name}", daphne))
        await asyncio.gather(*(_welcomed(client) for client in clients))
        subscribers = [c for c in clients if c.name.startswith("orders@")]
        others = [c for c in clients if not c.name.startswith("orders@")]
        for client in subscribers:
            await _subscribe_orders(client)
        for client in others:
            if client.name.startswith("refused@"):
                await _refused(client)
        if hub_layer == "pubsub":
            await _wait_for_pubsub_hubs(cluster, "events.shop", 2)

        pk = await cluster.write_orders("A-1", "--update", "--rollback")

        for client in subscribers:
            await client.wait_event("shop::Order::created", pk)
            await client.wait_event("shop::Order::updated", pk)
        await asyncio.sleep(QUIET_PERIOD)

        for client in subscribers:
            events = client.events()
            names = [frame["event"]["name"] for frame in events]
            assert names == ["shop::Order::created", "shop::Order::updated"], (
                f"{client.name}: {events}\n{cluster.describe()}"
            )
            created, updated = events
            payload = _check_order_event(created, "shop::Order::created", pk, "orders")
            assert payload["fields"]["number"] == "A-1"
            assert payload["fields"]["status"] == "new"
            assert payload["fields"]["total"] == "19.90"
            payload = _check_order_event(updated, "shop::Order::updated", pk, "orders")
            assert payload["fields"]["number"] == "A-1"
            assert payload["fields"]["status"] == "paid"
            assert "status" in payload["changed"], payload
            assert "number" not in payload["changed"], payload
            assert payload["previous"]["status"] == "new", payload
        # Both daphnes delivered the very same events.
        ids = {tuple(f["event"]["id"] for f in client.events()) for client in subscribers}
        assert len(ids) == 1, ids
        for client in others:
            assert client.events() == [], f"{client.name}: {client.frames}"
            assert client.closed is None, f"{client.name}: {client.closed!r}"


@pytest.mark.parametrize("hub_layer", ["core", "pubsub"])
async def test_a_client_back_on_another_daphne_catches_up_with_since(
    cluster: Cluster, hub_layer: str
) -> None:
    """A client that left resumes on the other daphne from its last event id, missing nothing."""
    if hub_layer == "pubsub":
        cluster.env["CE_E2E_HUB_LAYER"] = "pubsub"
    one, two = await cluster.start("one", "two")
    async with _clients() as clients:
        first = await Client.open("before@one", one)
        clients.append(first)
        await _welcomed(first)
        await _subscribe_orders(first)
        if hub_layer == "pubsub":
            await _wait_for_pubsub_hubs(cluster, "events.shop", 1)
        pk = await cluster.write_orders("B-1")
        seen = await first.wait_event("shop::Order::created", pk)
        await first.close()

        # Written while the client is away: an update, then another order.
        missed = [await cluster.write_orders("B-2", "--update")]
        again = await Client.open("after@two", two)
        clients.append(again)
        await _welcomed(again)
        await again.send(
            {
                "type": "subscribe",
                "id": "orders",
                "pattern": r"shop::Order::.*",
                "since": seen["event"]["id"],
            }
        )
        await again.wait_event("shop::Order::updated", missed[0])
        live = await cluster.write_orders("B-3")
        await again.wait_event("shop::Order::created", live)
        await asyncio.sleep(QUIET_PERIOD)
        names = [(f["event"]["name"], f["event"]["payload"]["pk"]) for f in again.events()]
        assert names == [
            ("shop::Order::created", missed[0]),
            ("shop::Order::updated", missed[0]),
            ("shop::Order::created", live),
        ], f"{again.frames}\n{cluster.describe()}"
        assert not any(f.get("type") == "gap" for f in again.frames), again.frames


async def _wait_for_pubsub_hubs(cluster: Cluster, group: str, count: int) -> None:
    """Wait until ``count`` processes subscribe to ``group`` on the pub/sub layer."""
    admin = redis.Redis.from_url(cluster.env["CE_E2E_REDIS_URL"])
    channel = f"{cluster.env['CE_E2E_PREFIX']}__group__{group}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            found = dict(admin.pubsub_numsub(channel)).get(channel.encode(), 0)
            if found >= count:
                return
            assert time.monotonic() < deadline, f"{found} of {count} hubs on {channel}"
            await asyncio.sleep(0.05)
    finally:
        admin.close()


async def test_refused_and_idle_clients_get_no_events(cluster: Cluster) -> None:
    """Only the subscribed client gets the event; refused and idle clients get nothing."""
    (daphne,) = await cluster.start("solo")
    async with _clients() as clients:
        for role in ("orders", "refused", "idle"):
            clients.append(await Client.open(role, daphne))
        await asyncio.gather(*(_welcomed(client) for client in clients))
        subscriber, refused, idle = clients
        await _subscribe_orders(subscriber)
        await _refused(refused)
        # A refused subscribe changes nothing: the connection still works.
        await refused.send({"type": "ping", "id": "p1"})
        assert (await refused.wait_for(lambda f: f.get("type") == "pong")) == [
            {"type": "pong", "id": "p1"}
        ]

        pk = await cluster.write_orders("B-1", "--rollback")

        await subscriber.wait_event("shop::Order::created", pk)
        await asyncio.sleep(QUIET_PERIOD)
        events = subscriber.events()
        assert len(events) == 1, f"{events}\n{cluster.describe()}"
        payload = _check_order_event(events[0], "shop::Order::created", pk, "orders")
        assert payload["fields"]["number"] == "B-1"
        assert payload["fields"]["status"] == "new"
        for client in (refused, idle):
            assert client.events() == [], f"{client.name}: {client.frames}"
            assert client.closed is None, f"{client.name}: {client.closed!r}"


async def test_foreign_origin_is_refused(cluster: Cluster) -> None:
    """The handshake is refused with 403 when Origin is not in ALLOWED_HOSTS."""
    (daphne,) = await cluster.start("solo")
    with pytest.raises(InvalidStatus) as refused:
        async with connect(daphne.url(), origin="http://evil.example", open_timeout=EVENT_TIMEOUT):  # type: ignore[arg-type]
            pass
    assert refused.value.response.status_code == 403
    # The same server accepts a client of its own origin.
    async with _clients() as clients:
        clients.append(await Client.open("local", daphne))
        await _welcomed(clients[0])


async def test_redis_connections_do_not_grow_with_websockets(cluster: Cluster) -> None:
    """200 subscribed websockets use as many Redis connections as one; all get the event."""
    (daphne,) = await cluster.start("crowd")
    admin = redis.Redis.from_url(cluster.env["CE_E2E_REDIS_URL"])
    try:
        async with _clients() as clients:

            async def join(index: int) -> Client:
                client = await Client.open(f"ws-{index}", daphne)
                await _welcomed(client)
                answer = await client.subscribe("all", r"shop::.*")
                assert answer == {
                    "type": "subscribed",
                    "id": "all",
                    "namespace": "shop",
                    "last": ANY,
                }, f"{client.name}: {answer}"
                return client

            clients.append(await join(0))
            await asyncio.sleep(0.3)  # let the hub join the group
            with_one, total_one = _redis_clients(admin, daphne.pid)
            assert with_one >= 1, f"no Redis connection found for {daphne.describe()}"

            for start in range(1, 200, 50):
                batch = range(start, min(start + 50, 200))
                clients.extend(await asyncio.gather(*(join(index) for index in batch)))
            assert len(clients) == 200
            await asyncio.sleep(0.3)
            with_many, total_many = _redis_clients(admin, daphne.pid)
            counts = (
                f"daphne's Redis clients: {with_one} with 1 websocket, {with_many} with 200 "
                f"(all Redis clients: {total_one} -> {total_many})"
            )
            assert with_many <= with_one + 2, counts

            pk = await cluster.write_orders("C-1")
            await asyncio.gather(
                *(client.wait_event("shop::Order::created", pk) for client in clients)
            )
            await asyncio.sleep(QUIET_PERIOD)
            after_event, _ = _redis_clients(admin, daphne.pid)
            assert after_event <= with_one + 2, f"{counts}, {after_event} after an event"
            for client in clients:
                events = client.events()
                assert len(events) == 1, f"{client.name}: {events}"
                _check_order_event(events[0], "shop::Order::created", pk, "all")
                assert client.closed is None, f"{client.name}: {client.closed!r}"
    finally:
        admin.close()


async def test_idle_websocket_survives_demo_layer_config(cluster: Cluster) -> None:
    """With the demo's layer config, a subscribed websocket stays open while nothing happens."""
    cluster.env["CE_E2E_PLAIN_HOSTS"] = "1"
    (daphne,) = await cluster.start("plain")
    async with _clients() as clients:
        client = await Client.open("idle-subscriber", daphne)
        clients.append(client)
        await _welcomed(client)
        await _subscribe_orders(client)
        # The reader ends when the connection closes.
        await asyncio.wait({client.reader}, timeout=IDLE_PERIOD)
        if client.closed is not None:
            raise ConnectionDropped(f"closed while idle: {client.closed!r}\n{daphne.describe()}")
        await client.send({"type": "ping", "id": "still-there"})
        await client.wait_for(lambda f: f == {"type": "pong", "id": "still-there"})


# ----------------------------------------------------------------------- what a client can cause


def _tracebacks(daphne: Daphne) -> list[str]:
    """Return daphne's log lines that start a traceback (every log line is kept)."""
    lines = daphne.log.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or "Exception inside" in line]


async def test_frames_a_client_can_send_get_their_answer_and_no_traceback(
    cluster: Cluster,
) -> None:
    """A ping id of 1e400 gets bad_request; a frame far too big closes with 4009, not 1011."""
    (daphne,) = await cluster.start("solo")
    async with _clients() as clients:
        pinger = await Client.open("pinger", daphne)
        big = await Client.open("big", daphne)
        clients.extend([pinger, big])
        await asyncio.gather(_welcomed(pinger), _welcomed(big))
        # JSON has no limit on numbers: 1e400 parses as infinity, which has no JSON.
        await pinger.ws.send('{"type": "ping", "id": 1e400}')
        (error,) = await pinger.wait_for(lambda f: f.get("type") == "error")
        assert error["code"] == "bad_request" and "id" not in error, error
        await pinger.send({"type": "ping", "id": "alive"})
        await pinger.wait_for(lambda f: f == {"type": "pong", "id": "alive"})
        # Over four times MAX_FRAME_BYTES (64 KiB).
        await big.ws.send(json.dumps({"type": "ping", "pad": "x" * 300_000}))
        await asyncio.wait({big.reader}, timeout=EVENT_TIMEOUT)
        assert isinstance(big.closed, ConnectionClosed), big.closed
        assert big.closed.rcvd is not None and big.closed.rcvd.code == 4009, big.closed
        await pinger.send({"type": "ping", "id": "still"})
        await pinger.wait_for(lambda f: f == {"type": "pong", "id": "still"})
        # daphne logs what an application raised when it next looks, within a second.
        await asyncio.sleep(1.5)
    assert _tracebacks(daphne) == [], daphne.describe()


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """Return one masked frame, as a client sends it (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    else:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))


def _server_frame(sock: socket.socket) -> Frame:
    """Read one unfragmented text frame from the server and return its JSON."""

    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError("the server closed the connection")
            data += chunk
        return data

    first, second = exactly(2)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(exactly(2), "big")
    elif size == 127:
        size = int.from_bytes(exactly(8), "big")
    assert first & 0x0F == 1, f"not a text frame: opcode {first & 0x0F}"
    frame: Frame = json.loads(exactly(size))
    return frame


def _stalling_subscriber(daphne: Daphne) -> socket.socket:
    """Open a websocket on a bare socket that takes in almost nothing; subscribe it to shop.

    The socket's receive buffer is tiny and it is never read again, so what
    the server sends it piles up in the server.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(EVENT_TIMEOUT)
    sock.connect(("127.0.0.1", daphne.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/events/ HTTP/1.1\r\nHost: 127.0.0.1:{daphne.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {daphne.origin}\r\n\r\n"
        ).encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    assert _server_frame(sock)["type"] == "welcome"
    subscribe = {"type": "subscribe", "id": "all", "pattern": "shop::.*"}
    sock.sendall(_client_frame(1, json.dumps(subscribe).encode()))
    assert _server_frame(sock)["type"] == "subscribed"
    return sock


async def test_a_client_leaving_during_a_fan_out_costs_one_log_line(cluster: Cluster) -> None:
    """Frames for a connection daphne is closing are refused: the writer stops, no traceback.

    daphne refuses frames ("Attempt to send on a closed protocol") from the
    client's close frame until the disconnect reaches the consumer, which
    takes until what is queued for the client is written: here, never. A
    ``BUFFER_BYTES`` above what the client is sent lets the writer hand
    daphne every frame, as a client that reads would have it.
    """
    cluster.env["CE_E2E_BUFFER_BYTES"] = str(64 * 2**20)
    (daphne,) = await cluster.start("solo")
    stalled = await asyncio.to_thread(_stalling_subscriber, daphne)
    try:
        async with _clients() as emitters:
            for index in range(3):
                emitters.append(await Client.open(f"emitter-{index}", daphne))
            await asyncio.gather(*(_welcomed(emitter) for emitter in emitters))
            pad = "x" * 60_000

            async def emit(emitter: Client, count: int) -> None:
                for number in range(count):
                    payload = {"n": number, "pad": pad}
                    await emitter.send({"type": "emit", "name": "shop::tick", "payload": payload})
                await emitter.wait_for(lambda f: f.get("type") == "emitted", count)

            # About 7 MB for the stalled client, a burst within each emitter's rate
            # limit: more than the kernel buffers hold, so daphne keeps the rest.
            await asyncio.gather(*(emit(emitter, 40) for emitter in emitters))
            await asyncio.sleep(0.5)
            close = _client_frame(8, (1000).to_bytes(2, "big"))
            await asyncio.to_thread(stalled.sendall, close)
            await asyncio.sleep(1.0)  # the close frame is in, and a token or twenty back
            for emitter in emitters:
                for _ in range(5):
                    await emitter.send({"type": "emit", "name": "shop::tick", "payload": {}})
            await asyncio.gather(
                *(
                    emitter.wait_for(lambda f: f.get("type") == "emitted", 45)
                    for emitter in emitters
                )
            )
            await asyncio.sleep(1.5)
    finally:
        stalled.close()
    log = daphne.log.read_text(errors="replace")
    assert _tracebacks(daphne) == [], daphne.describe()
    refused = [line for line in log.splitlines() if "Attempt to send on a closed protocol" in line]
    # The scenario happened (daphne refused a frame), and cost one line.
    assert len(refused) == 1, daphne.describe()
