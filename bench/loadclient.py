"""Many event-stream clients in one process, resuming as the JS client does.

``bench/faults.py``, ``bench/capacity.py`` and the topology tests start this
module as a child process:

    python bench/loadclient.py --url ws://... --clients N --total T --out FILE [--churn]

Each client opens the websocket, waits for ``welcome``, subscribes to
``--pattern`` (with ``since`` set to the id of the last event it saw, or to
the ``last`` its previous ``subscribed`` named when it has seen none), and
reads. When the connection closes without being asked to, it connects again
after the JS client's backoff (half to all of ``min(15 s, 0.5 s x 2^attempt)``,
the attempt counted from the last ``welcome``). With ``--churn`` each
connection is cut (its socket aborted, no closing handshake) at a random
moment 5-15 s after it opened, and the client stays away 1.5-2.5 s.

The process talks to its parent on standard input and output, one line each:
it prints ``ready`` once every client is subscribed; ``go`` starts the churn;
``end`` stops it, and the process then waits (at most ``--straggle``
seconds) until every client has the last event (sequence ``total - 1``),
writes what it saw to ``--out`` and prints ``done``.

Frames are not parsed as JSON on the hot path: an event frame is matched
with two regular expressions for the event id, ``sent`` and ``seq`` of the
payload the publisher writes (``{"sent": <time.time()>, "seq": <n>}``).

``--out`` gets a JSON summary (per client: delivered, duplicates, out of
order, gaps, lagged, reconnects; replay latencies; per event: how many
clients got it; how late a 50 ms timer of the process fired, the client's
own share of the latency) and, beside it, ``<out>.sent`` and ``<out>.lat``: for every
live event frame received (not replayed after a resumed ``subscribe``), the
event's publish time (float64) and its latency (float32, receive minus
publish).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import random
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIN_DELAY = 0.5  # the JS client's minDelay and maxDelay, in seconds
MAX_DELAY = 15.0
CHURN_EVERY = (5.0, 15.0)
CHURN_AWAY = (1.5, 2.5)
HANDSHAKES_AT_ONCE = 50

_EVENT_ID = re.compile(rb'"event":\{[^{]*?"id":"([^"]+)"')
_PAYLOAD = re.compile(rb'"sent":([0-9.eE+-]+),"seq":([0-9]+)')


def backoff(attempt: int) -> float:
    """Return the JS client's delay before reconnect ``attempt`` (0 first), in seconds."""
    ceiling = min(MAX_DELAY, MIN_DELAY * 2**attempt)
    return ceiling / 2 + random.random() * ceiling / 2


def raise_fd_limit() -> None:
    """Raise this process's open-file limit to its hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Client:
    """What one client saw."""

    total: int
    seen: bytearray = field(init=False)
    last_id: str | None = None
    last_hint: str | None = None  # ``subscribed.last``, for a client that saw nothing yet
    last_seq: int = -1
    delivered: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    gaps: int = 0
    lagged: int = 0
    connects: int = 0
    failed_connects: int = 0
    resubscribed_at: float | None = None
    replay_last: float | None = None
    counted: bool = False
    worst: float = 0.0  # the longest live latency, seconds
    lost_at: float | None = None  # when the server closed the connection, if it did
    ws: Any = None  # the open connection, if any
    cut: bool = False  # the churn cut the connection

    def __post_init__(self) -> None:
        self.seen = bytearray(self.total)

    def wire_summary(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "gaps": self.gaps,
            "lagged": self.lagged,
            "reconnects": max(self.connects - 1, 0),
            "failed_connects": self.failed_connects,
            "has_last": bool(self.total and self.seen[self.total - 1]),
            "worst": self.worst,
        }


class Crowd:
    """Every client of this process, and what they received."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.clients = [Client(args.total) for _ in range(args.clients)]
        self.per_event = array.array("I", bytes(4 * args.total))
        self.sent = array.array("d")
        self.latency = array.array("f")
        self.replays: list[float] = []
        self.comebacks: list[float] = []  # from a server's close to the next welcome
        self.lag = array.array("f")  # how late a 50 ms timer fired, seconds
        self.ending = False
        self.opening = asyncio.Semaphore(HANDSHAKES_AT_ONCE)
        self.subscribed = 0
        self.all_subscribed = asyncio.Event()
        self.finished = 0  # clients that have the last event
        self.all_finished = asyncio.Event()

    # -- one frame -----------------------------------------------------------------

    def on_frame(self, client: Client, data: bytes) -> None:
        if data.startswith(b'{"type":"event"'):
            now = time.time()
            found = _PAYLOAD.search(data)
            ident = _EVENT_ID.search(data)
            if found is None or ident is None:
                return
            sent = float(found.group(1))
            seq = int(found.group(2))
            client.last_id = ident.group(1).decode()
            if client.resubscribed_at is not None and sent < client.resubscribed_at:
                client.replay_last = now  # replayed: its latency is the time away
            else:
                self.sent.append(sent)
                self.latency.append(now - sent)
                client.worst = max(client.worst, now - sent)
            if seq >= client.total:
                return
            if client.seen[seq]:
                client.duplicates += 1
                return
            client.seen[seq] = 1
            client.delivered += 1
            self.per_event[seq] += 1
            if seq == client.total - 1:
                self.finished += 1
                if self.finished == len(self.clients):
                    self.all_finished.set()
            if seq < client.last_seq:
                client.out_of_order += 1
            else:
                client.last_seq = seq
            return
        message = json.loads(data)
        kind = message.get("type")
        if kind == "subscribed":
            client.last_hint = message.get("last") or client.last_hint
            if not client.counted:
                client.counted = True
                self.subscribed += 1
                if self.subscribed == len(self.clients):
                    self.all_subscribed.set()
        elif kind == "gap":
            client.gaps += 1
        elif kind == "lagged":
            client.lagged += 1
        elif kind == "error":
            raise RuntimeError(f"the server refused: {message}")

    def close_replay(self, client: Client) -> None:
        if client.resubscribed_at is not None and client.replay_last is not None:
            self.replays.append(client.replay_last - client.resubscribed_at)
        client.resubscribed_at = client.replay_last = None

    # -- one client ---------------------------------------------------------------

    async def run_client(self, client: Client) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        attempt = 0
        while not (self.ending and self.done(client)):
            try:
                async with self.opening:
                    ws = await connect(
                        self.args.url,
                        origin="http://127.0.0.1",  # type: ignore[arg-type]
                        compression=None,
                        ping_interval=None,
                        open_timeout=20,
                        max_size=2**20,
                        max_queue=None,
                    )
            except (OSError, InvalidHandshake, asyncio.TimeoutError):
                client.failed_connects += 1
                await asyncio.sleep(backoff(attempt))
                attempt += 1
                continue
            client.connects += 1
            client.ws = ws
            client.cut = False
            try:
                welcome = await asyncio.wait_for(ws.recv(decode=False), 20)
                if b'"welcome"' not in welcome:
                    raise RuntimeError(f"no welcome: {welcome!r}")
                attempt = 0
                if client.lost_at is not None:
                    self.comebacks.append(time.time() - client.lost_at)
                    client.lost_at = None
                subscribe: dict[str, Any] = {"type": "subscribe", "id": "s1"}
                subscribe["pattern"] = self.args.pattern
                since = client.last_id or client.last_hint
                if since:
                    subscribe["since"] = since
                    client.resubscribed_at = time.time()
                await ws.send(json.dumps(subscribe))
                async for data in _frames(ws):
                    self.on_frame(client, data)
                    if self.ending and self.done(client):
                        break
            except (ConnectionClosed, OSError, asyncio.TimeoutError):
                pass
            finally:
                client.ws = None
                self.close_replay(client)
            if self.ending and self.done(client):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(), 2)
                break
            if client.cut:
                await asyncio.sleep(random.uniform(*CHURN_AWAY))
                continue
            if client.lost_at is None:
                client.lost_at = time.time()
            await asyncio.sleep(backoff(attempt))
            attempt += 1

    async def watch_loop(self) -> None:
        """Record how late a 50 ms timer fires: this process's own share of the latency."""
        clock = time.monotonic
        while not self.ending:
            before = clock()
            await asyncio.sleep(0.05)
            self.lag.append(clock() - before - 0.05)

    async def churn(self, client: Client) -> None:
        """Cut ``client``'s connection every 5-15 s, without a closing handshake."""
        while not self.ending:
            await asyncio.sleep(random.uniform(*CHURN_EVERY))
            if client.ws is not None and not self.ending:
                client.cut = True
                client.ws.transport.abort()

    def done(self, client: Client) -> bool:
        return client.total == 0 or bool(client.seen[client.total - 1])

    # -- the process ---------------------------------------------------------------

    async def main(self) -> None:
        tasks = [asyncio.create_task(self.run_client(client)) for client in self.clients]
        await asyncio.wait_for(self.all_subscribed.wait(), self.args.open_timeout)
        print("ready", flush=True)
        while True:
            line = (await asyncio.to_thread(sys.stdin.readline)).strip()
            if line == "go":
                tasks.append(asyncio.create_task(self.watch_loop()))
            if line == "go" and self.args.churn:
                tasks += [asyncio.create_task(self.churn(client)) for client in self.clients]
            elif line == "end" or not line:
                break
        self.ending = True
        if self.finished < len(self.clients):
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.all_finished.wait(), self.args.straggle)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.write()
        print("done", flush=True)

    def write(self) -> None:
        out = Path(self.args.out)
        summary = {
            "clients": [client.wire_summary() for client in self.clients],
            "per_event": self.per_event.tolist(),
            "replays": self.replays,
            "lag": sorted(self.lag),
            "comebacks": self.comebacks,
        }
        out.write_text(json.dumps(summary))
        out.with_suffix(".sent").write_bytes(self.sent.tobytes())
        out.with_suffix(".lat").write_bytes(self.latency.tobytes())


async def _frames(ws: Any) -> Any:
    """Yield the frames of ``ws`` as bytes until it closes."""
    recv = ws.recv
    while True:
        yield await recv(decode=False)


def load(out: Path) -> tuple[dict[str, Any], array.array[float], array.array[float]]:
    """Read what a client process wrote to ``out``."""
    summary = json.loads(out.read_text())
    sent = array.array("d")
    sent.frombytes(out.with_suffix(".sent").read_bytes())
    latency = array.array("f")
    latency.frombytes(out.with_suffix(".lat").read_bytes())
    return summary, sent, latency


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--total", type=int, required=True, help="events the publisher sends")
    parser.add_argument("--out", required=True)
    parser.add_argument("--pattern", default="shop::bench::tick")
    parser.add_argument("--churn", action="store_true")
    parser.add_argument("--straggle", type=float, default=20.0)
    parser.add_argument("--open-timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    asyncio.run(Crowd(args).main())


if __name__ == "__main__":
    main()
