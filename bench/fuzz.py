"""Protocol fuzz: hostile frames over many websockets against a real daphne on Redis.

Run from the repository root, with a Redis server at the given URL:

    .venv/bin/python bench/fuzz.py --frames 20000 [--connections 50] [--seed 1]
        [--redis-url redis://127.0.0.1:6379/1]

It starts daphne serving ``asgi:application`` with ``tests.e2e_settings``
(the demo, a ``channels_redis`` layer under a key prefix of its own, emits
open in namespace ``shop``) and then, from one seeded random generator:

- opens ``--connections`` hostile clients, each with one real subscription
  (``keep``, pattern ``shop::fuzz::check``), and a control client subscribed
  to ``shop::.*``;
- sends ``--frames`` frames spread over the hostile clients, each at about
  15 frames a second (under the rate limit, except the floods): bad JSON,
  wrong types, huge ids and numbers, unicode edge cases (escaped lone
  surrogates, NUL, noncharacters, emoji, right-to-left marks), nested junk,
  oversized frames, floods, binary frames, and every message type with
  mutated fields, among valid messages (subscriptions that come and go,
  pings, emits). A client the server closes (4008 after a flood, 4009 after
  a frame far too big) is replaced by a new one;
- then emits ``--checks`` events ``shop::fuzz::check`` from one more client.

It passes when daphne's log holds no traceback, every hostile client still
open receives every check event on its ``keep`` subscription, and the
control client receives every event the server said it emitted (the
hostile clients' ``emitted`` answers, and the checks). It prints what was
sent, what came back and the verdict; the exit status is 0 on a pass.
``tests/test_fuzz.py`` runs a smaller run of the same code in the suite.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

ROOT = Path(__file__).resolve().parent.parent
KEEP = {"type": "subscribe", "id": "keep", "pattern": r"shop::fuzz::check"}
CHECK = "shop::fuzz::check"
# Frames a second per hostile client: under RATE_LIMIT (20), so only the
# floods are refused.
PACE = 15.0
TIMEOUT = 30.0

# Text that is not JSON, or not a whole object.
BAD_JSON = [
    "",
    "{",
    "}",
    "[1,",
    '{"type": "ping"',
    "{'type': 'ping'}",
    '{"type": ping}',
    "NaN",
    "Infinity",
    '{"type": "ping", "id": NaN}',
    "undefined",
    "\x00",
    '{"a":1}{"b":2}',
    "null",
    "true",
    "42",
    '"ping"',
    "[]",
    '{"type": "ping",}',
    "\ufeff{}",
]
# Unicode that is easy to get wrong: JSON escapes of lone surrogates, NUL,
# noncharacters, a BOM, right-to-left marks, emoji, combining marks.
UNICODE = [
    "\\ud800",
    "\\udfff",
    "\\ud83d",
    "a\\ud800b",
    "\\u0000",
    "\\uffff",
    "\\ufffe",
    "\\ufeff",
    "\u202e\u2066",
    "\U0001f600",
    "e\u0301",
    "\u00e9" * 40,
    "::",
    "shop::\\ud800",
    "\\\\",
    '\\"',
]
TYPES = ["subscribe", "unsubscribe", "ping", "emit", "join", "leave"]
IDS = [f"f{n}" for n in range(8)]
PATTERNS = [
    "shop::.*",
    r"shop::fuzz::x\d+",
    "shop::(a+)+$",
    "shop::(?P<x>",
    "shop::[",
    ".*",
    "billing::.*",
    "shop::" + "a" * 300,
    "shop::(?=x)",
    r"shop::\1",
    "shop::" + "(a|a)*" * 20,
]


def junk(rng: random.Random, depth: int = 0) -> Any:
    """Return a JSON value of a random type: the wrong thing, most places."""
    kind = rng.randrange(12)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 2**64, -(2**63) - 1, 10**30, 1.5, -0.0, 1e308])
    if kind == 3:
        return "x" * rng.choice([0, 1, 64, 65, 1000, 20000])
    if kind == 4 and depth < 3:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 5 and depth < 3:
        return {str(rng.randrange(100)): junk(rng, depth + 1) for _ in range(rng.randrange(4))}
    if kind == 6:
        return rng.choice(IDS)
    if kind == 7:
        return rng.choice(PATTERNS)
    if kind == 8:
        return "shop::fuzz::x" + str(rng.randrange(10))
    return rng.choice(["", "keep ", "shop", "shop::", "01JD3Z8Q4X1V6T2N9K5M7R0B3C", "-"])


def valid(rng: random.Random, kind: str) -> dict[str, Any]:
    """Return a well-formed message of ``kind`` (never touching the ``keep`` subscription)."""
    if kind == "subscribe":
        message = {"type": kind, "id": rng.choice(IDS), "pattern": rng.choice(PATTERNS[:2])}
        if rng.random() < 0.3:
            message["since"] = rng.choice(["01JD3Z8Q4X1V6T2N9K5M7R0B3C", "x"])
        if rng.random() < 0.3:
            message["where"] = {"pk": rng.randrange(5), "fields.status": ["new", "paid"]}
        return message
    if kind in ("unsubscribe", "leave"):
        return {"type": kind, "id": rng.choice(IDS)}
    if kind == "ping":
        return {"type": kind, "id": rng.choice(IDS)} if rng.random() < 0.7 else {"type": kind}
    if kind == "emit":
        return {"type": kind, "name": f"shop::fuzz::x{rng.randrange(10)}", "payload": {"n": 1}}
    return {"type": kind, "id": rng.choice(IDS), "topic": "shop::room"}


def mutated(rng: random.Random) -> dict[str, Any]:
    """Return a message of a random type with one to three fields changed, dropped or added."""
    message = valid(rng, rng.choice(TYPES))
    for _ in range(rng.randint(1, 3)):
        key = rng.choice([*message, "extra", "id", "payload", "where", "since", "type"])
        roll = rng.random()
        if roll < 0.2 and key in message:
            del message[key]
        else:
            message[key] = junk(rng)
    if message.get("id") == "keep":
        message["id"] = "f0"
    return message


def unicode_frame(rng: random.Random) -> str:
    """Return JSON text with an edge-case string in a field, escapes left as they are."""
    bad = rng.choice(UNICODE)
    field = rng.choice(["type", "id", "pattern", "name", "payload-key", "payload-value", "since"])
    base = {"type": "ping", "id": "f1"}
    if field == "type":
        return '{"type": "' + bad + '"}'
    if field in ("id", "since"):
        return '{"type": "subscribe", "pattern": "shop::.*", "' + field + '": "' + bad + '"}'
    if field == "pattern":
        return '{"type": "subscribe", "id": "f2", "pattern": "shop::' + bad + '"}'
    if field == "name":
        return '{"type": "emit", "name": "shop::' + bad + '", "payload": {}}'
    if field == "payload-key":
        return '{"type": "emit", "name": "shop::fuzz::u", "payload": {"' + bad + '": 1}}'
    if field == "payload-value":
        return '{"type": "emit", "name": "shop::fuzz::u", "payload": {"t": "' + bad + '"}}'
    return json.dumps(base)


def make_frames(rng: random.Random) -> tuple[str, list[str | bytes]]:
    """Return one hostile move: its category and the frame(s) it sends."""
    roll = rng.random()
    if roll < 0.12:
        text = rng.choice(BAD_JSON)
        if rng.random() < 0.3:
            whole = json.dumps(mutated(rng))
            text = whole[: rng.randrange(max(1, len(whole)))]
        return "bad_json", [text]
    if roll < 0.24:
        message = valid(rng, rng.choice(TYPES))
        key = rng.choice(list(message))
        message[key] = junk(rng)
        if message.get("id") == "keep":
            message["id"] = "f0"
        return "wrong_types", [json.dumps(message)]
    if roll < 0.30:
        huge = rng.choice(
            ['"' + "i" * rng.randrange(65, 20000) + '"', "1e400", "-1e400", "9" * 400, "1" * 30]
        )
        kind = rng.choice(["ping", "subscribe", "unsubscribe"])
        return "huge_ids", ['{"type": "' + kind + '", "pattern": "shop::.*", "id": ' + huge + "}"]
    if roll < 0.40:
        return "unicode", [unicode_frame(rng)]
    if roll < 0.46:
        depth = rng.choice([50, 101, 600, 5000, 20000])
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        nest = opener * depth + "1" + closer * depth
        if rng.random() < 0.5:
            return "nested", [nest]
        return "nested", [
            '{"type": "emit", "name": "shop::fuzz::n", "payload": {"a": ' + nest + "}}"
        ]
    if roll < 0.49:
        size = rng.choice([65537, 70000, 200000]) if rng.random() < 0.9 else 300000
        return "oversized", [json.dumps({"type": "ping", "id": "f3", "pad": "x" * size})]
    if roll < 0.50:
        count = rng.choice([45, 60, 120])
        return "flood", [json.dumps({"type": "ping", "id": "f4"})] * count
    if roll < 0.55:
        return "binary", [rng.randbytes(rng.randrange(1, 200))]
    if roll < 0.85:
        return "mutated", [json.dumps(mutated(rng))]
    kind = rng.choices(TYPES, weights=[3, 3, 3, 1, 1, 1])[0]
    return "valid", [json.dumps(valid(rng, kind))]


class Peer:
    """One websocket and everything it received, read as it arrives."""

    def __init__(self, name: str, ws: ClientConnection) -> None:
        self.name = name
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, name: str, url: str, origin: str) -> Peer:
        ws = await connect(url, origin=origin, open_timeout=TIMEOUT, max_size=2**21)  # type: ignore[arg-type]
        return cls(name, ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.frames.append(json.loads(message))
        except ConnectionClosed as exc:
            self.close_code = exc.rcvd.code if exc.rcvd is not None else None
        finally:
            self.closed.set()

    async def wait(self, predicate: Callable[[dict[str, Any]], bool], count: int = 1) -> bool:
        deadline = time.monotonic() + TIMEOUT
        while sum(1 for frame in self.frames if predicate(frame)) < count:
            if time.monotonic() > deadline or self.closed.is_set():
                return False
            await asyncio.sleep(0.02)
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


def events_named(peer: Peer, name: str, sid: str | None = None) -> list[dict[str, Any]]:
    return [
        frame
        for frame in peer.frames
        if frame.get("type") == "event"
        and frame["event"]["name"] == name
        and (sid is None or sid in frame["subscriptions"])
    ]


async def fuzz(
    url: str, origin: str, *, frames: int, connections: int, seed: int, checks: int = 20
) -> dict[str, Any]:
    """Fuzz the server at ``url``; return what happened (``report["ok"]`` is the verdict)."""
    rng = random.Random(seed)
    sent: collections.Counter[str] = collections.Counter()
    replaced: collections.Counter[str] = collections.Counter()
    retired: list[Peer] = []
    control = await Peer.open("control", url, origin)
    await control.ws.send(json.dumps({"type": "subscribe", "id": "all", "pattern": "shop::.*"}))
    assert await control.wait(lambda f: f.get("type") == "subscribed"), control.frames

    async def hostile(index: int) -> Peer:
        peer = await Peer.open(f"hostile-{index}", url, origin)
        await peer.ws.send(json.dumps(KEEP))
        if not await peer.wait(lambda f: f.get("type") == "subscribed" and f["id"] == "keep"):
            raise AssertionError(f"{peer.name}: keep not subscribed: {peer.frames}")
        return peer

    peers = list(await asyncio.gather(*(hostile(index) for index in range(connections))))
    share = [
        frames // connections + (1 if i < frames % connections else 0) for i in range(connections)
    ]
    # One generator per client, seeded from the run's: the moves do not
    # depend on how the clients' tasks interleave.
    seeds = [rng.randrange(2**32) for _ in range(connections)]

    async def replace(index: int) -> None:
        peer = peers[index]
        replaced[str(peer.close_code)] += 1
        retired.append(peer)
        peers[index] = await hostile(index)
        # A flood's strikes are forgotten only with a full bucket.
        await asyncio.sleep(0.5)

    async def play(index: int) -> None:
        own = random.Random(seeds[index])
        left = share[index]
        while left > 0:
            if peers[index].closed.is_set():
                await replace(index)
            category, batch = make_frames(own)
            batch = batch[:left]
            peer = peers[index]
            with contextlib.suppress(ConnectionClosed):
                for frame in batch:
                    await peer.ws.send(frame)
            left -= len(batch)
            sent[category] += len(batch)
            await asyncio.sleep(len(batch) / PACE)
            if category in ("flood", "oversized"):
                # The server may be closing it (4008, 4009): let the close arrive.
                closing = asyncio.ensure_future(peer.closed.wait())
                await asyncio.wait({closing}, timeout=2.0)
                closing.cancel()
                if peer.closed.is_set() and left > 0:
                    await replace(index)

    started = time.monotonic()
    await asyncio.gather(*(play(index) for index in range(connections)))
    fuzz_seconds = time.monotonic() - started

    # Every emit the server accepted must reach the control client.
    emitted = {
        frame["id"]
        for peer in [*peers, *retired]
        for frame in peer.frames
        if frame.get("type") == "emitted"
    }
    emitter = await Peer.open("emitter", url, origin)
    for number in range(checks):
        await emitter.ws.send(json.dumps({"type": "emit", "name": CHECK, "payload": {"n": number}}))
        await asyncio.sleep(1 / PACE)
    assert await emitter.wait(lambda f: f.get("type") == "emitted", checks), emitter.frames
    checked = {frame["id"] for frame in emitter.frames if frame.get("type") == "emitted"}
    missing_keep = {}
    for peer in peers:
        if peer.closed.is_set():
            continue  # closed by its own last moves: counted under closed_at_end
        if not await peer.wait(
            lambda f: (
                f.get("type") == "event"
                and f["event"]["name"] == CHECK
                and "keep" in f["subscriptions"]
            ),
            checks,
        ):
            missing_keep[peer.name] = len(events_named(peer, CHECK, "keep"))
    wanted = emitted | checked
    await control.wait(
        lambda f: f.get("type") == "event" and f["event"]["id"] in wanted, len(wanted)
    )
    heard = {frame["event"]["id"] for frame in control.frames if frame.get("type") == "event"}
    answers: collections.Counter[str] = collections.Counter()
    for peer in [*peers, *retired]:
        for frame in peer.frames:
            kind = str(frame.get("type"))
            answers[f"{kind}:{frame['code']}" if kind == "error" else kind] += 1
    report = {
        "seed": seed,
        "frames": sum(sent.values()),
        "connections": connections,
        "fuzz_seconds": round(fuzz_seconds, 1),
        "sent": dict(sorted(sent.items())),
        "answers": dict(sorted(answers.items())),
        "replaced_after_close": dict(sorted(replaced.items())),
        "surviving": len([peer for peer in peers if not peer.closed.is_set()]),
        "closed_at_end": {peer.name: peer.close_code for peer in peers if peer.closed.is_set()},
        "keep_missing": missing_keep,
        "emitted": len(emitted),
        "control_missing": len(wanted - heard),
        "control_lagged": [f for f in control.frames if f.get("type") == "lagged"],
    }
    # Only the closes a client asks for: 4008 (flood), 4009 (frame far too big).
    closes = [*report["closed_at_end"].values(), *(int(c) for c in replaced if c != "None")]
    report["ok"] = (
        not missing_keep
        and not report["control_missing"]
        and not report["control_lagged"]
        and all(code in (4008, 4009) for code in closes)
    )
    await asyncio.gather(*(peer.close() for peer in [*peers, *retired, control, emitter]))
    return report


def tracebacks(log: Path) -> list[str]:
    """Return the server log's lines that start a traceback."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or "Exception inside" in line]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--checks", type=int, default=20)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    args = parser.parse_args()
    prefix = f"cefuzz-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
            DJANGO_SETTINGS_MODULE="tests.e2e_settings",
            PYTHONUNBUFFERED="1",
            CE_E2E_DB=str(Path(tmp) / "fuzz.sqlite3"),
            CE_E2E_REDIS_URL=args.redis_url,
            CE_E2E_PREFIX=prefix,
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
        port = _free_port()
        log = Path(tmp) / "daphne.log"
        with log.open("wb") as out:
            daphne = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "daphne",
                    "-b",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "asgi:application",
                ],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                    break
                if time.monotonic() > deadline or daphne.poll() is not None:
                    print(log.read_text(errors="replace"))
                    return 2
                time.sleep(0.1)
            report = asyncio.run(
                fuzz(
                    f"ws://127.0.0.1:{port}/ws/events/",
                    f"http://127.0.0.1:{port}",
                    frames=args.frames,
                    connections=args.connections,
                    seed=args.seed,
                    checks=args.checks,
                )
            )
            time.sleep(1.5)  # daphne logs what an application raised when it next looks
            report["tracebacks"] = tracebacks(log)
            report["ok"] = report["ok"] and not report["tracebacks"]
        finally:
            daphne.send_signal(signal.SIGTERM)
            try:
                daphne.wait(10)
            except subprocess.TimeoutExpired:
                daphne.kill()
            import redis

            client = redis.Redis.from_url(args.redis_url)
            keys = list(client.scan_iter(match=f"{prefix}*", count=500))
            if keys:
                client.delete(*keys)
            client.close()
        if report["tracebacks"]:
            print(log.read_text(errors="replace")[-5000:])
    print(json.dumps(report, indent=2))
    print("PASS" if report["ok"] else "FAIL")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
