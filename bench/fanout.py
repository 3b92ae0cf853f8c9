"""Websocket fan-out: EventStreamConsumer next to plain Channels groups and a bare floor.

Run from the repository root, with a Redis server at ``--redis-url``:

    .venv/bin/python bench/fanout.py [--quick]

Three servers, each one daphne process started by this script
(``python -m daphne bench.fanout_app:<application>``, settings
``bench.fanout_settings``, the channels_redis layer of ``--layer``):

- ``channels_events``: clients connect to ``EventStreamConsumer`` and
  subscribe to ``bench::.*``; a publisher process (plain Django, same
  settings) calls ``channels_events.dispatch("bench::tick", payload)`` and its
  hub publishes the event.
- ``channels``: an ``AsyncJsonWebsocketConsumer`` that joins group ``bench``
  on connect and ``send_json``s each ``bench.tick`` message; the publisher
  awaits ``layer.group_send("bench", {"type": "bench.tick", "event": ...})``.
- ``floor``: a bare ``AsyncWebsocketConsumer`` without a channel layer; one
  task in daphne reads a Redis pub/sub channel and ``send``s every message (an
  already encoded frame) to each connected consumer in turn; the publisher
  ``PUBLISH``es the encoded frame.

Every server writes the same frame to each client: ``{"type": "event",
"subscriptions": [...], "event": {id, name, namespace, payload, timestamp}}``,
with a payload of about 200 bytes that starts with ``"sent": time.time()``.

Two loads (``--load broadcast``, the default): 100 clients at 50 events/s
and 1000 clients at 10 events/s, for ``--seconds`` each. ``--load detail``
is the detail-page load: 1000 clients at 10 events/s over 100 pks, each
client subscribed with ``where: {"pk": <its pk>}`` (client ``i`` watches pk
``i % 100``, event ``n`` is about pk ``n % 100``: every event is for 10
clients), beside the same 1000 clients unfiltered; the filtered load runs on
``channels_events`` only, the one server that filters (``--load all`` runs
every load). Clients run in one process per 500 connections (the
``websockets`` asyncio client); all are connected and subscribed before the
publisher (another process) starts. After the last event the script waits
``--straggle`` seconds, then reads:

- ``delivered``: event frames received / frames due (clients x events sent;
  with ``where``, the clients whose pk each event is about);
- ``p50``/``p99``: publish-to-receive latency, ``time.time()`` on receipt
  minus ``sent``, over every frame received;
- ``daphne CPU per delivery``: daphne's utime + stime (``/proc/<pid>/stat``)
  from the first event to the end of the straggler wait, divided by the frames
  delivered.

Every server and load is measured ``--rounds`` times (3 by default), the
servers taking turns within a round; the tables give the median of each
figure, and the least delivered. Ratios are against the floor at the same
load. Every key of the run lives in the Redis database of ``--redis-url``
under a prefix unique to the run and is deleted at the end; every process
started is killed on the way out. The run takes about four and a half minutes
(``--quick``: one round of 2 s per load, under a minute).

``--servers`` picks some of them. ``--metrics both`` adds
``channels_events_nometrics``, the same server with the ``METRICS`` setting
off (daphne and publisher), and a line per load with the CPU per delivery
that metrics cost. ``--layer pubsub`` runs daphne and the
publisher on ``channels_redis.pubsub.RedisPubSubChannelLayer`` instead of the
core ``RedisChannelLayer``; the floor uses no channel layer either way.

``--profile DIR`` records daphne with py-spy (``pip install py-spy``) during
each publishing window, as raw stacks, one file per server and load; the
profiler slows daphne down, so read the figures of such a run with care.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import json
import os
import queue
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "bench.fanout_settings"
SERVERS = {
    "channels_events": "events_application",
    # The same server with the METRICS setting off (--metrics both).
    "channels_events_nometrics": "events_application",
    "channels": "channels_application",
    "floor": "floor_application",
}
EVENT_NAME = "bench::tick"
SUBSCRIPTION = "s1"
SUBSCRIBE = {"type": "subscribe", "id": SUBSCRIPTION, "pattern": "bench::.*"}
CLIENTS_PER_PROCESS = 500
HANDSHAKES_AT_ONCE = 20
SENT_KEY = b'"sent":'
# Targets for channels_events, against the floor at the same load.
TARGET_CPU_RATIO = 1.25
TARGET_P99_RATIO = 1.5


@dataclass(frozen=True)
class Load:
    clients: int
    rate: int
    #: With pks, client ``i`` subscribes with ``where: {"pk": i % pks}`` and
    #: event ``n`` is about pk ``n % pks`` (a detail page per client).
    pks: int = 0

    @property
    def label(self) -> str:
        base = f"{self.clients} clients x {self.rate}/s"
        return f"{base}, where pk (of {self.pks})" if self.pks else base

    def due(self, sent: int) -> int:
        """Return how many frames ``sent`` events make: one per client whose filter they meet."""
        if not self.pks:
            return self.clients * sent
        watchers = [len(range(pk, self.clients, self.pks)) for pk in range(self.pks)]
        return sum(watchers[seq % self.pks] for seq in range(sent))


BROADCAST = (Load(100, 50), Load(1000, 10))
DETAIL = (Load(1000, 10), Load(1000, 10, pks=100))
LOADS = {"broadcast": BROADCAST, "detail": DETAIL, "all": (*BROADCAST, DETAIL[1])}


def payload(seq: int, sent: float, pks: int = 0) -> dict[str, Any]:
    """Return the event payload: the send time first, then about 200 bytes of fields."""
    return {
        "sent": sent,
        "seq": seq,
        "model": "bench.item",
        "pk": seq % pks if pks else seq,
        "number": f"A-{seq:06d}",
        "status": "paid",
        "total": "19.90",
        "currency": "EUR",
        "customer": 17,
        "changed": ["status", "total"],
        "note": "a fan-out benchmark event, about two hundred bytes in all",
    }


def frame(seq: int, sent: float) -> dict[str, Any]:
    """Return the frame the channels and floor servers write: what channels_events writes."""
    from channels_events._events import new_event_id

    return {
        "type": "event",
        "subscriptions": [SUBSCRIPTION],
        "event": {
            "id": new_event_id(sent),
            "name": EVENT_NAME,
            "namespace": "bench",
            "payload": payload(seq, sent),
            "timestamp": datetime.fromtimestamp(sent, timezone.utc).isoformat(),
        },
    }


def percentile(ordered: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` percentile (0-100) of sorted ``ordered``."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# -- the client process --------------------------------------------------------


async def run_clients(args: argparse.Namespace) -> None:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import ConnectionClosed

    latencies = array.array("d")
    counting = False
    # Few handshakes at a time: each channels connection borrows a Redis
    # connection for group_add, and the layer's pool holds at most 100.
    opening = asyncio.Semaphore(HANDSHAKES_AT_ONCE)

    async def open_one(index: int) -> ClientConnection:
        subscribe = dict(SUBSCRIBE)
        if args.pks:
            subscribe["where"] = {"pk": (args.first + index) % args.pks}
        async with opening:
            ws = await connect(
                args.url, compression=None, ping_interval=None, open_timeout=60, max_size=2**20
            )
            if args.kind.startswith("channels_events"):
                await ws.recv()  # welcome
                await ws.send(json.dumps(subscribe))
                while True:
                    answer = await ws.recv()
                    if '"subscribed"' in answer:
                        break
                    if '"error"' in answer:
                        raise RuntimeError(f"subscribe refused: {answer}")
            return ws

    async def read(ws: ClientConnection) -> None:
        recv = ws.recv
        now = time.time
        append = latencies.append
        with contextlib.suppress(ConnectionClosed):
            while True:
                data = await recv(decode=False)
                start = data.find(SENT_KEY)
                if start < 0 or not counting:
                    continue
                end = data.find(b",", start)
                append(now() - float(data[start + len(SENT_KEY) : end]))

    connections = await asyncio.gather(*(open_one(index) for index in range(args.clients)))
    readers = [asyncio.create_task(read(ws)) for ws in connections]
    counting = True
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    counting = False
    await asyncio.to_thread(Path(args.out).write_bytes, latencies.tobytes())
    print(json.dumps({"frames": len(latencies), "connections": len(connections)}), flush=True)
    for task in readers:
        task.cancel()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(
            asyncio.gather(*(ws.close() for ws in connections), return_exceptions=True), 10
        )


# -- the publisher process -----------------------------------------------------


def run_publisher(args: argparse.Namespace) -> None:
    import django

    django.setup()
    total = round(args.rate * args.seconds)
    if args.kind.startswith("channels_events"):
        from channels_events import dispatch
        from channels_events._hub import get_hub

        hub = get_hub()
        dispatch("benchwarmup::ping", {})  # starts the hub's thread and its connection
        hub.flush()
        print("ready", flush=True)
        sys.stdin.readline()
        clock = time.perf_counter
        start = clock()
        for seq in range(total):
            delay = start + seq / args.rate - clock()
            if delay > 0:
                time.sleep(delay)
            dispatch(EVENT_NAME, payload(seq, time.time(), args.pks))
        hub.flush()
        elapsed = clock() - start
    else:
        elapsed = asyncio.run(publish_async(args, total))
    print(json.dumps({"sent": total, "seconds": elapsed}), flush=True)


async def publish_async(args: argparse.Namespace, total: int) -> float:
    from django.conf import settings

    if args.kind == "channels":
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        await layer.group_send("benchwarmup", {"type": "bench.warmup"})

        async def send(seq: int) -> None:
            message = {"type": "bench.tick", "event": frame(seq, time.time())}
            await layer.group_send("bench", message)

    else:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(settings.FANOUT_REDIS_URL)
        await client.ping()
        channel = settings.FANOUT_FLOOR_CHANNEL
        encode = json.JSONEncoder(separators=(",", ":")).encode

        async def send(seq: int) -> None:
            await client.publish(channel, encode(frame(seq, time.time())))

    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    clock = time.perf_counter
    start = clock()
    for seq in range(total):
        delay = start + seq / args.rate - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        await send(seq)
    return clock() - start


# -- the driver ----------------------------------------------------------------


class Child:
    """A child process whose stdout lines are read by a thread into a queue."""

    children: list[Child] = []

    def __init__(
        self, name: str, command: list[str], env: dict[str, str], stderr: TextIO | None = None
    ) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        Child.children.append(self)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, timeout: float) -> str:
        """Return the next line the child printed, or raise if none comes in time."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer within {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"{self.name} exited with code {self.proc.wait()}")
        return line

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @classmethod
    def stop_all(cls) -> None:
        for child in cls.children:
            child.stop()
        cls.children.clear()


def child_env(args: argparse.Namespace, server: str | None = None) -> dict[str, str]:
    return dict(
        os.environ,
        FANOUT_METRICS="off" if server == "channels_events_nometrics" else "on",
        DJANGO_SETTINGS_MODULE=SETTINGS,
        FANOUT_REDIS_URL=args.redis_url,
        FANOUT_PREFIX=args.prefix,
        FANOUT_LAYER=args.layer,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )


def this_script(role: str, *options: object) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--role", role, *map(str, options)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """Return the process's user + system CPU time (all its threads) from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_daphne(args: argparse.Namespace, server: str, log: TextIO) -> tuple[Child, int]:
    port = free_port()
    command = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port)]
    command.append(f"bench.fanout_app:{SERVERS[server]}")
    daphne = Child(f"daphne ({server})", command, child_env(args, server), stderr=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if daphne.proc.poll() is not None:
            log.flush()
            tail = Path(log.name).read_text(errors="replace")[-4000:]
            raise RuntimeError(f"daphne ({server}) exited:\n{tail}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return daphne, port
        time.sleep(0.1)
    raise RuntimeError(f"daphne ({server}) did not listen within 30 s")


def wait_until_listening(args: argparse.Namespace, server: str, clients: int) -> None:
    """Return once Redis shows the server's subscription: the group or the pub/sub channel."""
    import redis

    client = redis.Redis.from_url(args.redis_url)
    deadline = time.monotonic() + 10
    group = "events.bench" if server.startswith("channels_events") else "bench"

    def subscribed(channel: str) -> bool:
        return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) > 0

    try:
        while time.monotonic() < deadline:
            if server == "floor":
                ready = subscribed(f"{args.prefix}:floor")
            elif args.layer == "pubsub":
                # One subscription per process and group, made by the first
                # member, which joins before its websocket is accepted.
                ready = subscribed(f"{args.prefix}__group__{group}")
            else:
                wanted = clients if server == "channels" else 1
                ready = client.zcard(f"{args.prefix}:group:{group}") >= wanted
            if ready:
                return
            time.sleep(0.05)
    finally:
        client.close()
    raise RuntimeError(f"{server}: its Redis subscription did not appear within 10 s")


def start_profiler(
    args: argparse.Namespace, server: str, load: Load, daphne: Child
) -> Child | None:
    """Start py-spy on daphne for the publishing window, if ``--profile`` asks for it."""
    if not args.profile:
        return None
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    out = Path(args.profile) / f"{server}-{load.clients}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    command = [py_spy, "record", "--pid", str(daphne.proc.pid), "--format", "raw"]
    command += ["--rate", "250", "--nonblocking", "--output", str(out)]
    command += ["--duration", str(round(args.seconds + args.straggle))]
    return Child(f"py-spy ({server})", command, dict(os.environ))


def settle(daphne: Child, timeout: float = 20) -> None:
    """Wait until daphne is idle again (below 5% of a core for half a second)."""
    deadline = time.monotonic() + timeout
    before = cpu_seconds(daphne.proc.pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        after = cpu_seconds(daphne.proc.pid)
        if after - before < 0.025:
            return
        before = after


def measure(
    args: argparse.Namespace, server: str, port: int, daphne: Child, load: Load
) -> dict[str, Any]:
    env = child_env(args, server)
    sizes = [CLIENTS_PER_PROCESS] * (load.clients // CLIENTS_PER_PROCESS)
    if load.clients % CLIENTS_PER_PROCESS:
        sizes.append(load.clients % CLIENTS_PER_PROCESS)
    outputs = [Path(args.tmp) / f"{server}-{load.clients}-{i}.bin" for i in range(len(sizes))]
    clients = [
        Child(
            f"clients {i} ({server})",
            this_script(
                "clients",
                "--kind", server,
                "--url", f"ws://127.0.0.1:{port}/",
                "--clients", size,
                "--first", i * CLIENTS_PER_PROCESS,
                "--pks", load.pks,
                "--out", out,
            ),
            env,
        )
        for i, (size, out) in enumerate(zip(sizes, outputs, strict=True))
    ]  # fmt: skip
    profiler: Child | None = None
    publisher = Child(
        f"publisher ({server})",
        this_script(
            "publish",
            "--kind",
            server,
            "--rate",
            load.rate,
            "--seconds",
            args.seconds,
            "--pks",
            load.pks,
        ),
        env,
    )
    try:
        for child in [*clients, publisher]:
            line = child.expect(90)
            if line != "ready":
                raise RuntimeError(f"{child.name} said {line!r}")
        wait_until_listening(args, server, load.clients)
        time.sleep(0.5)
        profiler = start_profiler(args, server, load, daphne)
        cpu_before = cpu_seconds(daphne.proc.pid)
        started = time.monotonic()
        publisher.tell("go")
        sent = json.loads(publisher.expect(args.seconds + 60))
        time.sleep(args.straggle)
        cpu = cpu_seconds(daphne.proc.pid) - cpu_before
        window = time.monotonic() - started
        received = 0
        for child in clients:
            child.tell("stop")
            received += json.loads(child.expect(60))["frames"]
        latencies: list[float] = []
        for out in outputs:
            values = array.array("d")
            values.frombytes(out.read_bytes())
            latencies.extend(values)
        for child in [*clients, publisher]:
            child.wait(15)
        if profiler is not None:
            profiler.wait(15)
    finally:
        for child in [*clients, publisher, *([profiler] if profiler else [])]:
            child.stop()
            Child.children.remove(child)
    latencies.sort()
    expected = load.due(sent["sent"])
    return {
        "sent": sent["sent"],
        "publish_rate": sent["sent"] / sent["seconds"] if sent["seconds"] else float("nan"),
        "received": received,
        "delivered": received / expected if expected else float("nan"),
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": latencies[-1] * 1e3 if latencies else float("nan"),
        "cpu_s": cpu,
        "cpu_share": cpu / window,
        "cpu_us": cpu / received * 1e6 if received else float("nan"),
        "cpu_event_us": cpu / sent["sent"] * 1e6 if sent["sent"] else float("nan"),
    }


def clean_redis(args: argparse.Namespace) -> int:
    import redis

    client = redis.Redis.from_url(args.redis_url)
    try:
        keys = list(client.scan_iter(match=f"{args.prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}x" if floor else "n/a"


def report(args: argparse.Namespace, results: dict[tuple[str, str], dict[str, Any]]) -> None:
    layer = {"core": "RedisChannelLayer", "pubsub": "RedisPubSubChannelLayer"}[args.layer]
    print(
        f"\nPython {sys.version.split()[0]}, {os.cpu_count()} cores, channels_redis {layer}, "
        f"{args.seconds:g} s of publishing per load, {args.straggle:g} s for stragglers, "
        f"median of {args.rounds} round(s)\n"
    )
    print(
        "| load | server | delivered | p50 | p99 | daphne CPU per delivery "
        "| CPU vs floor | p99 vs floor |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for load in [load for load in args.loads if not load.pks]:
        floor = results.get((load.label, "floor"))
        for server in SERVERS:
            row = results.get((load.label, server))
            if row is None:
                continue
            cpu_ratio = ratio(row["cpu_us"], floor["cpu_us"]) if floor else "n/a"
            p99_ratio = ratio(row["p99_ms"], floor["p99_ms"]) if floor else "n/a"
            print(
                f"| {load.label} | {server} | {row['delivered']:.2%} | {row['p50_ms']:.1f} ms "
                f"| {row['p99_ms']:.1f} ms | {row['cpu_us']:.1f} µs | {cpu_ratio} | {p99_ratio} |"
            )
    print(
        "\nLatency and CPU per delivery cover the frames delivered, however few. Each figure "
        "is the median over the rounds; delivered, events sent and frames received are "
        "those of the round that delivered least."
    )
    print("\n| load | server | events sent | publish rate | frames received | max latency "
          "| daphne CPU | daphne busy |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for load in args.loads:
        for server in SERVERS:
            row = results.get((load.label, server))
            if row is None:
                continue
            print(
                f"| {load.label} | {server} | {row['sent']} | {row['publish_rate']:.1f}/s "
                f"| {row['received']:,} | {row['max_ms']:.1f} ms | {row['cpu_s']:.2f} s "
                f"| {row['cpu_share']:.0%} of a core |"
            )
    if any(load.pks for load in args.loads):
        report_filtered(args, results)
    print()
    server = "channels_events"
    for load in args.loads:
        ours = results.get((load.label, server))
        floor = results.get((load.label, "floor"))
        if not ours or not floor:
            continue
        misses = []
        if ours["delivered"] < 1:
            misses.append(f"delivered {ours['delivered']:.2%}")
        if ours["cpu_us"] > TARGET_CPU_RATIO * floor["cpu_us"]:
            misses.append(f"CPU {ratio(ours['cpu_us'], floor['cpu_us'])} > {TARGET_CPU_RATIO}x")
        if ours["p99_ms"] > TARGET_P99_RATIO * floor["p99_ms"]:
            misses.append(f"p99 {ratio(ours['p99_ms'], floor['p99_ms'])} > {TARGET_P99_RATIO}x")
        verdict = "meets the targets" if not misses else "misses: " + ", ".join(misses)
        print(f"- {load.label}: {server} {verdict}")
    for load in args.loads:
        on = results.get((load.label, "channels_events"))
        off = results.get((load.label, "channels_events_nometrics"))
        if on and off:
            print(
                f"- {load.label}: metrics on vs off, daphne CPU per delivery "
                f"{on['cpu_us'] / off['cpu_us'] - 1:+.1%}"
            )


Results = dict[tuple[str, str], dict[str, Any]]


def report_filtered(args: argparse.Namespace, results: Results) -> None:
    """Print channels_events with ``where`` beside it without, at the same clients and rate."""
    print(
        "\nchannels_events with a filter per client (a detail page each) beside every client "
        "unfiltered. Delivered is the share of the frames due (with where: the clients whose "
        "pk the event is about); CPU per delivered frame and per event sent are daphne's.\n"
    )
    print(
        "| load | delivered | frames per event | p50 | p99 "
        "| CPU per delivered frame | CPU per event |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    shown = [load for load in args.loads if load.pks]
    shown += [
        load
        for load in args.loads
        if not load.pks and any((load.clients, load.rate) == (f.clients, f.rate) for f in shown)
    ]
    for load in sorted(shown, key=lambda load: load.pks):
        row = results.get((load.label, "channels_events"))
        if row is None:
            continue
        per_event = row["received"] / row["sent"] if row["sent"] else float("nan")
        print(
            f"| {load.label} | {row['delivered']:.2%} | {per_event:.1f} | {row['p50_ms']:.1f} ms "
            f"| {row['p99_ms']:.1f} ms | {row['cpu_us']:.1f} µs | {row['cpu_event_us']:.0f} µs |"
        )


def combine(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Return one row for several rounds: the median of each figure, the least delivered."""
    row = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
    worst = min(rows, key=lambda r: r["delivered"])
    row.update(sent=worst["sent"], received=worst["received"], delivered=worst["delivered"])
    row["rounds"] = len(rows)
    return row


def drive(args: argparse.Namespace) -> None:
    raise_fd_limit()
    args.prefix = f"fanout-{uuid.uuid4().hex[:10]}"
    args.tmp = tempfile.mkdtemp(prefix="fanout-")
    rounds: dict[tuple[str, str], list[dict[str, Any]]] = {}
    log_path = Path(args.tmp) / "daphne.log"
    failed = False
    try:
        with open(log_path, "w") as log:
            # Servers take turns within each round, so a slower spell of the
            # machine spreads over all of them rather than one.
            for round_no in range(1, args.rounds + 1):
                for server in args.servers:
                    daphne, port = start_daphne(args, server, log)
                    try:
                        for load in args.loads:
                            if load.pks and server != "channels_events":
                                continue  # only channels_events filters on the server
                            print(
                                f"round {round_no}/{args.rounds}: {server}: {load.label} ...",
                                file=sys.stderr,
                                flush=True,
                            )
                            try:
                                row = measure(args, server, port, daphne, load)
                            except Exception as exc:  # report it, go on with the others
                                print(f"{server}: {load.label} failed: {exc}", file=sys.stderr)
                                failed = True
                            else:
                                rounds.setdefault((load.label, server), []).append(row)
                            with contextlib.suppress(OSError):
                                settle(daphne)
                    finally:
                        daphne.stop()
                        Child.children.remove(daphne)
        if failed:
            tail = log_path.read_text(errors="replace")[-4000:]
            print(f"daphne's log ended with:\n{tail}", file=sys.stderr)
    finally:
        Child.stop_all()
        with contextlib.suppress(Exception):
            clean_redis(args)
        shutil.rmtree(args.tmp, ignore_errors=True)
    report(args, {key: combine(rows) for key, rows in rounds.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 s per load: a smoke run")
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="measure every server and load this many times and report medians "
        "(default: 3; 1 with --quick)",
    )
    parser.add_argument(
        "--load",
        choices=list(LOADS),
        default="broadcast",
        help="broadcast: 100 clients x 50/s and 1000 x 10/s, every client every event "
        "(default); detail: 1000 clients x 10/s, each filtering on its own pk of 100, beside "
        "the same unfiltered; all: every load",
    )
    parser.add_argument("--seconds", type=float, default=None, help="publishing time per load")
    parser.add_argument("--straggle", type=float, default=None, help="wait after the last event")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/4")
    parser.add_argument(
        "--layer",
        choices=["core", "pubsub"],
        default="core",
        help="the channels_redis layer of daphne and the publisher (default: core)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="record daphne with py-spy during each publishing window, into DIR (raw stacks)",
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        choices=list(SERVERS),
        default=None,
        help="default: channels_events channels floor",
    )
    parser.add_argument(
        "--metrics",
        choices=["on", "both"],
        default="on",
        help="both: also channels_events with the METRICS setting off, side by side",
    )
    # Internal: the client and publisher processes.
    parser.add_argument("--role", choices=["drive", "clients", "publish"], default="drive")
    parser.add_argument("--kind", choices=list(SERVERS))
    parser.add_argument("--url")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--out")
    parser.add_argument("--rate", type=float)
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--pks", type=int, default=0)
    args = parser.parse_args()
    if args.role == "clients":
        asyncio.run(run_clients(args))
    elif args.role == "publish":
        sys.path.insert(0, str(ROOT))
        run_publisher(args)
    else:
        if args.seconds is None:
            args.seconds = 2.0 if args.quick else 10.0
        if args.straggle is None:
            args.straggle = 1.0 if args.quick else 2.0
        if args.rounds is None:
            args.rounds = 1 if args.quick else 3
        args.loads = LOADS[args.load]
        if args.servers is None:
            args.servers = ["channels_events", "channels", "floor"]
        if args.metrics == "both" and "channels_events_nometrics" not in args.servers:
            args.servers.insert(1, "channels_events_nometrics")
        drive(args)


if __name__ == "__main__":
    main()
