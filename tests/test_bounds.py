"""What one connection can make a server hold: bounded, under daphne and under uvicorn.

A client that never reads, subscribed to a busy namespace, or looping on
``subscribe`` with ``since`` and ``unsubscribe``, must not grow the server's
memory without bound, and a reading client on the same server must still
get every event. The server's memory is its resident set, read from
``/proc/<pid>/status``; events come from a process of their own over Redis.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.test_e2e import (
    DAPHNE,
    EVENT_TIMEOUT,
    ROOT,
    Client,
    Cluster,
    Daphne,
    _client_frame,
    _clients,
    _free_port,
    _server_frame,
    _stalling_subscriber,
    _tracebacks,
    _welcomed,
    cluster,  # noqa: F401 - the fixture
)

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

# Dispatch argv[1] events "shop::blob" of argv[2] bytes of padding, numbered
# from argv[3], in bursts of BURST with a pause between; wait until published.
PUBLISHER_SCRIPT = """
import sys
import time

import django

django.setup()

from channels_events import dispatch, get_hub

count, size, first = (int(arg) for arg in sys.argv[1:4])
pad = "x" * size
for n in range(first, first + count):
    dispatch("shop::blob", {"n": n, "pad": pad})
    if n % 20 == 19:
        time.sleep(0.03)
assert get_hub().flush(30), "not all events were published"
"""

#: What the server may grow by while a client holds up what it has been sent.
GROWTH_LIMIT = 12 * 2**20


class Uvicorn(Daphne):
    """A uvicorn process (one worker) serving ``asgi:application``, like :class:`Daphne`."""

    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.log = logs / f"{name}.log"
        self._log_file = self.log.open("wb")
        command = [sys.executable, "-m", "uvicorn", "asgi:application", "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )


async def serve(processes: Cluster, kind: str) -> Daphne:
    """Start one server of ``kind`` (daphne or uvicorn) on the cluster's Redis."""
    assert DAPHNE  # the same environment as test_e2e's daphnes
    server = (Uvicorn if kind == "uvicorn" else Daphne)(kind, processes.env, processes.logs)
    processes.daphnes.append(server)
    await server.wait_ready(time.monotonic() + 40)
    return server


def rss(pid: int) -> int:
    """Return the resident set of process ``pid``, in bytes."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert found, status
    return int(found.group(1)) * 1024


async def publish(processes: Cluster, count: int, size: int, first: int) -> None:
    """Dispatch ``count`` events of ``size`` bytes from a process of their own."""
    done = await asyncio.to_thread(
        processes._run, ["-c", PUBLISHER_SCRIPT, str(count), str(size), str(first)], 120
    )
    assert done.returncode == 0, f"publisher failed:\n{done.stdout}\n{done.stderr}"


def is_blob(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "event" and frame["event"]["name"] == "shop::blob"


def numbers(client: Client) -> list[int]:
    return [frame["event"]["payload"]["n"] for frame in client.frames if is_blob(frame)]


async def control_gets(control: Client, count: int) -> None:
    """Wait until ``control`` has every one of ``count`` events, in order, once."""
    deadline = time.monotonic() + 60
    while len(numbers(control)) < count and time.monotonic() < deadline:
        if control.reader.done():
            break
        await asyncio.sleep(0.1)
    assert numbers(control) == list(range(count)), (
        f"control got {len(numbers(control))}/{count}; other frames: "
        f"{[f for f in control.frames if not is_blob(f)]}"
    )


def read_accounted(sock: socket.socket, total: int, deadline: float) -> list[dict[str, Any]]:
    """Read frames from a raw socket until ``total`` events were sent or counted as dropped."""
    frames = []
    accounted = 0
    while accounted < total and time.monotonic() < deadline:
        frame = _server_frame(sock)
        frames.append(frame)
        if is_blob(frame):
            accounted += 1
        elif frame.get("type") == "lagged":
            accounted += frame["dropped"]
    return frames


def read_until(sock: socket.socket, wanted: str, deadline: float) -> list[dict[str, Any]]:
    """Read frames from a raw socket until one of type ``wanted``; return them all."""
    frames = []
    while time.monotonic() < deadline:
        frame = _server_frame(sock)
        frames.append(frame)
        if frame.get("type") == wanted:
            return frames
    raise AssertionError(f"no {wanted!r} frame in {len(frames)} frames")


@pytest.mark.parametrize("kind", ["daphne", "uvicorn"])
async def test_a_client_that_never_reads_holds_a_bounded_amount(
    cluster: Cluster,  # noqa: F811
    kind: str,
) -> None:
    """Events for a never-reading client are dropped past the bound, and it learns how many.

    Every event is either sent to it or counted in the ``lagged`` it reads
    once it reads again. A reading client on the same server gets them all.
    """
    server = await serve(cluster, kind)
    stalled = await asyncio.to_thread(_stalling_subscriber, server)
    try:
        async with _clients() as clients:
            control = await Client.open("control", server)
            clients.append(control)
            await _welcomed(control)
            assert (await control.subscribe("blobs", r"shop::blob"))["type"] == "subscribed"
            # Enough to fill what the server lets the stalled client hold.
            await publish(cluster, 300, 8000, 0)
            await control_gets(control, 300)
            before = rss(server.pid)
            # About 24 MB more for the stalled client.
            await publish(cluster, 3000, 8000, 300)
            await control_gets(control, 3300)
            grown = rss(server.pid) - before
            assert grown < GROWTH_LIMIT, f"{kind} grew by {grown / 2**20:.1f} MiB"
            frames = await asyncio.to_thread(
                read_accounted, stalled, 3300, time.monotonic() + EVENT_TIMEOUT * 3
            )
    finally:
        stalled.close()
    sent = [frame["event"]["payload"]["n"] for frame in frames if is_blob(frame)]
    dropped = [frame["dropped"] for frame in frames if frame.get("type") == "lagged"]
    assert dropped and min(dropped) > 0, dropped
    # In order, none twice; what was not sent was counted.
    assert sent == sorted(set(sent)) and sent[0] == 0, sent[:5]
    assert len(sent) + sum(dropped) == 3300, (len(sent), dropped)
    assert _tracebacks(server) == [], server.describe()


def raw_client(server: Daphne) -> socket.socket:
    """Open a websocket on a bare socket that takes in almost nothing and is never read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(EVENT_TIMEOUT)
    sock.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws/events/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {server.origin}\r\n\r\n"
        ).encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    assert _server_frame(sock)["type"] == "welcome"
    return sock


async def test_a_never_reading_client_looping_on_since_holds_a_bounded_amount(
    cluster: Cluster,  # noqa: F811
) -> None:
    """Subscribe with since, unsubscribe, again: the replays count against the bound.

    Each replay is 2 MB of history; 30 of them, inside the rate limit, by a
    client that reads nothing, leave the server's memory where it was, and
    a reading client gets every live event meanwhile.
    """
    server = await serve(cluster, "daphne")
    async with _clients() as clients:
        control = await Client.open("control", server)
        clients.append(control)
        await _welcomed(control)
        assert (await control.subscribe("blobs", r"shop::blob"))["type"] == "subscribed"
        await publish(cluster, 200, 10000, 0)
        await control_gets(control, 200)
        first = next(frame["event"]["id"] for frame in control.frames if is_blob(frame))
        looper = await asyncio.to_thread(raw_client, server)
        try:
            before = rss(server.pid)
            subscribe = {"type": "subscribe", "id": "r", "pattern": "shop::blob", "since": first}
            unsubscribe = {"type": "unsubscribe", "id": "r"}
            for _ in range(30):
                for message in (subscribe, unsubscribe):
                    frame = _client_frame(1, json.dumps(message).encode())
                    await asyncio.to_thread(looper.sendall, frame)
                # Two messages a tenth of a second: the rate limit (20/s).
                await asyncio.sleep(0.1)
            await publish(cluster, 100, 1000, 200)
            await control_gets(control, 300)
            grown = rss(server.pid) - before
            assert grown < GROWTH_LIMIT, f"daphne grew by {grown / 2**20:.1f} MiB"
            # When it reads again, it learns it missed events.
            frames = await asyncio.to_thread(
                read_until, looper, "lagged", time.monotonic() + EVENT_TIMEOUT * 3
            )
            assert {**frames[0], "last": None} == {
                "type": "subscribed",
                "id": "r",
                "namespace": "shop",
                "last": None,
            }
        finally:
            looper.close()
    assert _tracebacks(server) == [], server.describe()
