"""Presence load: 1000 members joining one topic across two daphne processes.

Run from the repository root, with a Redis server at ``--redis-url``:

    .venv/bin/python bench/presence.py [--members 1000] [--rounds 3]

Two daphne processes serve ``EventStreamConsumer`` (``bench.fanout_app``,
settings ``bench.presence_settings``: the core ``channels_redis`` layer, and a
presence policy that admits ``?member=<id>`` as member ``<id>``). One
watcher connection per daphne joins ``bench::room`` first. Then the members,
half on each daphne, connect (not timed) and all send ``join`` at once; the
clock starts with the first ``join`` sent. Figures:

- ``all seen``: seconds until both watchers know every member (their
  ``presence`` answer plus the ``presence_diff`` frames since), the slower
  of the two; ``first seen`` the faster one;
- ``joins answered``: seconds until every member got its ``presence`` answer;
- Redis work per heartbeat interval, with every member present and nothing
  else going on, read with ``MONITOR`` for ``--idle`` intervals and filtered
  to this run's presence keys: the calls the processes make (round trips)
  and the commands Redis runs for them (those calls and the commands inside
  their scripts).

The round's median is printed; each round uses a fresh key prefix, deleted
at the end, and every process started is killed on the way out.
``PRESENCE_TIMEOUT`` is ``--timeout`` (8 s: a heartbeat every second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "bench::room"


def member(scope: dict[str, Any], topic: str) -> dict[str, Any] | None:
    """Admit a ``?member=<id>`` connection to any ``bench::`` topic as member ``<id>``."""
    found = parse_qs(scope.get("query_string", b"").decode()).get("member")
    if not found or not topic.startswith("bench::"):
        return None
    return {"id": found[0], "info": {"n": found[0]}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_daphne(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    command.append("bench.fanout_app:events_application")
    with log.open("ab") as out:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return proc, port
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("daphne did not listen within 30 s")


class Watcher:
    """A connection that joined the topic and follows who is there."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.members: set[str] = set()
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                frame = json.loads(text)
                if frame.get("type") == "presence":
                    self.members = {m["id"] for m in frame["members"]}
                elif frame.get("type") == "presence_diff":
                    self.members |= {m["id"] for m in frame["joins"]}
                    self.members -= {m["id"] for m in frame["leaves"]}
                self.changed.set()

    async def wait_for(self, count: int, deadline: float) -> float:
        while len(self.members) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"a watcher saw {len(self.members)}/{count} members")
            self.changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return time.monotonic()


async def open_ws(port: int, name: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(
        f"ws://127.0.0.1:{port}/ws/events/?member={name}",
        origin=f"http://127.0.0.1:{port}",  # type: ignore[arg-type]
        open_timeout=30,
        max_queue=None,
    )
    welcome = json.loads(await ws.recv())
    assert welcome["type"] == "welcome", welcome
    return ws


async def join(ws: Any, expect_answer: bool) -> None:
    await ws.send(json.dumps({"type": "join", "id": "p", "topic": TOPIC}))
    if expect_answer:
        while True:
            frame = json.loads(await ws.recv())
            if frame.get("id") == "p" and frame["type"] in {"presence", "error"}:
                assert frame["type"] == "presence", frame
                return


def monitor(url: str, prefix: str, seconds: float) -> tuple[int, int]:
    """Return (calls from clients, commands in all) touching ``prefix``'s presence keys."""
    import redis

    marker = f"{prefix}:presence:".encode()
    client = redis.Redis.from_url(url)
    calls = commands = 0
    done = threading.Event()
    with client.monitor() as mon:
        timer = threading.Timer(seconds, done.set)
        timer.start()
        connection = mon.connection
        assert connection is not None
        while not done.is_set():
            if not connection.can_read(timeout=0.1):
                continue
            line = connection.read_response()
            if not isinstance(line, bytes) or marker not in line:
                continue
            commands += 1
            # A command a script runs shows "[<db> lua]" as its client.
            if b" lua]" not in line:
                calls += 1
        timer.cancel()
    client.close()
    return calls, commands


def clean(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


async def one_round(args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    prefix = f"bench-presence-{uuid.uuid4().hex[:8]}"
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="bench.presence_settings",
        FANOUT_REDIS_URL=args.redis_url,
        FANOUT_PREFIX=prefix,
        PRESENCE_BENCH_TIMEOUT=str(args.timeout),
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    daphnes = [start_daphne(env, workdir / f"daphne-{i}.log") for i in range(2)]
    sockets: list[Any] = []
    try:
        ports = [port for _, port in daphnes]
        watchers = []
        for index, port in enumerate(ports):
            ws = await open_ws(port, f"watcher-{index}")
            sockets.append(ws)
            await join(ws, expect_answer=False)
            watchers.append(Watcher(ws))
        # Connected before the clock starts: the figure is about joining.
        # A few at a time: a thousand handshakes at once overflow daphne's backlog.
        gate = asyncio.Semaphore(50)

        async def member_ws(index: int) -> Any:
            async with gate:
                return await open_ws(ports[index % 2], f"m{index}")

        members = await asyncio.gather(*(member_ws(i) for i in range(args.members)))
        sockets.extend(members)
        everyone = args.members + 2
        started = time.monotonic()
        deadline = started + args.wait
        answered = asyncio.gather(*(join(ws, expect_answer=True) for ws in members))
        seen = await asyncio.gather(*(w.wait_for(everyone, deadline) for w in watchers))
        await answered
        joins_answered = time.monotonic() - started
        calls, commands = await asyncio.to_thread(
            monitor, args.redis_url, prefix, args.idle * args.timeout / 8
        )
        return {
            "all seen": max(seen) - started,
            "first seen": min(seen) - started,
            "joins answered": joins_answered,
            "calls per interval": calls / args.idle,
            "commands per interval": commands / args.idle,
        }
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for proc, _ in daphnes:
            proc.kill()
            proc.wait(10)
        clean(args.redis_url, prefix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=8.0, help="PRESENCE_TIMEOUT, seconds")
    parser.add_argument("--idle", type=int, default=3, help="heartbeat intervals to MONITOR")
    parser.add_argument("--wait", type=float, default=60.0, help="give up after this many s")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    args = parser.parse_args()
    import resource
    import tempfile

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.members + 256)), hard))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(args.rounds):
            row = asyncio.run(one_round(args, Path(tmp)))
            print(f"round {number + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()))
            rows.append(row)
    print(f"\n{args.members} members across 2 daphnes, PRESENCE_TIMEOUT {args.timeout} s")
    print(f"(a heartbeat every {args.timeout / 8} s), median of {args.rounds} round(s):\n")
    print("| figure | value |\n| --- | --- |")
    for key in rows[0]:
        unit = " s" if "seen" in key or "answered" in key else " (both processes)"
        print(f"| {key} | {statistics.median(r[key] for r in rows):.3f}{unit} |")


if __name__ == "__main__":
    main()
