"""Cross-process delivery: the hub next to raw channel-layer calls, on both Redis layers.

Run from the repository root, with a Redis server at the given URL:

    .venv/bin/python bench/crossprocess.py [--redis-url redis://127.0.0.1:6379/1]

For ``channels_redis.core.RedisChannelLayer`` and
``channels_redis.pubsub.RedisPubSubChannelLayer`` in turn, each measurement
starts a receiving process B, waits until B has joined its group and seen a
probe message come back through Redis, then starts a sending process A (both
are fresh interpreters started with ``subprocess``). Three paths per
layer and rate:

- ``hub, burst``: A calls ``dispatch(name, payload)`` ``--events`` times in a
  loop (a sync caller; Django's ``ready()`` hands every event to the hub,
  which publishes it from its background thread); B runs ``start_hub()`` and
  a sync ``@listen`` listener that counts the events. events/s is counted in
  B, from the first to the last event its listener sees.
- ``raw, burst``: A awaits ``layer.group_send(group, message)`` once per
  event, one after another, as a plain consumer would; B awaits
  ``layer.receive(channel)`` in a loop on a channel added to that group. The
  message carries the same envelope (id, name, namespace, payload, timestamp)
  the hub sends, so both paths move about the same bytes per event.
- ``hub, no history``: the hub path with ``HISTORY_SIZE`` 0, so A's hub does
  not record the events in a Redis stream before sending them (what the
  history for ``since`` costs).
- ``hub, N/s`` and ``raw, N/s``: the same paths at a fixed ``--rate`` for
  ``--seconds``. A puts ``time.time()`` in each payload just before sending;
  B subtracts it from ``time.time()`` when the event reaches the listener (or
  ``receive()`` returns), so latency is end to end on one machine's clock.

``delivered`` is what B's listener (or receive loop) saw out of what A sent;
B waits for the rest until nothing arrived for 3 s. A second table gives the
CPU time each process used per event (all threads, so the hub's included),
which depends less on what else the machine runs than the rates do. The
lines after it give, per layer, the time each ``dispatch()`` call took on A's
thread in the fixed-rate run (the cost a sync caller pays to publish) and,
for the burst, how fast A dispatched, how long the final ``flush()`` took and
how many events the hub dropped from its outbox (``OUTBOX_SIZE``).

``--metrics both`` adds ``hub, metrics off``: the hub path with the
``METRICS`` setting off in both processes, next to ``hub`` (metrics on), and
a line per layer and rate with the CPU per published event (A) and per
received event (B) that metrics cost. ``--paths`` picks paths, ``--rounds``
measures each several times (paths taking turns) and keeps the median.

Every Redis key and channel of the run lives under a prefix unique to it
(``--prefix``); the keys are deleted at the end. The whole run takes about a
minute and a half.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LAYERS = {
    "core": "channels_redis.core.RedisChannelLayer",
    "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
}
NAMESPACE = "bench"
ITEM = "bench::Item::updated"
PROBE = "bench::Probe::ready"
WARMUP = "bench::Warmup::sent"
RAW_GROUP = "bench-raw"
TIMESTAMP = "2025-01-01T12:00:00.000000+00:00"
# The paths measured, and the child roles that run them: the hub as
# configured by default (recording a history for catching up), the hub with
# HISTORY_SIZE 0, and raw channel-layer calls.
ROLES = {"hub": "hub", "hub-nohistory": "hub", "hub-nometrics": "hub", "raw": "raw"}
# What runs by default; --metrics both adds "hub-nometrics", the hub path with
# METRICS off, to compare the CPU the metrics cost in one run.
DEFAULT_PATHS = ["hub", "hub-nohistory", "raw"]
# B gives up waiting for the rest once nothing arrived for this long.
QUIET_SECONDS = 3.0


def model_payload(i: int, sent_at: float) -> dict[str, Any]:
    """Return a payload shaped like a model event's, stamped with the send time."""
    return {
        "model": "shop.order",
        "pk": i,
        "fields": {
            "id": i,
            "number": f"A-{i:06d}",
            "status": "paid",
            "total": "19.90",
            "customer": 17,
            "created": TIMESTAMP,
        },
        "changed": ["status"],
        "previous": {"status": "new"},
        "sent_at": sent_at,
    }


def raw_message(i: int, sent_at: float) -> dict[str, Any]:
    """Return what a plain consumer would send: the same envelope the hub sends."""
    return {
        "type": "bench.item",
        "event": {
            "id": f"{i:026d}",
            "name": ITEM,
            "namespace": NAMESPACE,
            "payload": model_payload(i, sent_at),
            "timestamp": TIMESTAMP,
        },
    }


def percentile(values: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` percentile (0-100) of ``values``."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def setup_django(args: argparse.Namespace) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["channels_events"],
        USE_TZ=True,
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": LAYERS[args.layer],
                "CONFIG": {"hosts": [args.redis_url], "prefix": args.prefix},
            }
        },
        CHANNELS_EVENTS={"HISTORY_SIZE": args.history, "METRICS": args.metrics != "off"},
    )
    django.setup()


class Tally:
    """Count received events and keep their latency; called from one thread at a time."""

    def __init__(self) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []

    def add(self, sent_at: float) -> None:
        now = time.time()
        self.latencies.append(now - sent_at)
        if not self.count:
            self.first = time.perf_counter()
        self.last = time.perf_counter()
        self.count += 1

    def summary(self, cpu_start: float) -> dict[str, Any]:
        """Return counts, rate and latency; CPU time is this process's since ``cpu_start``."""
        span = self.last - self.first
        return {
            "delivered": self.count,
            "cpu_seconds": time.process_time() - cpu_start,
            "rate": self.count / span if span > 0 else float("nan"),
            "p50_ms": percentile(self.latencies, 50) * 1e3,
            "p99_ms": percentile(self.latencies, 99) * 1e3,
        }


def wait_for(tally: Tally, sent: int) -> None:
    """Return once ``sent`` events arrived or nothing arrived for QUIET_SECONDS."""
    seen, since = tally.count, time.monotonic()
    while tally.count < sent and time.monotonic() - since < QUIET_SECONDS:
        time.sleep(0.01)
        if tally.count != seen:
            seen, since = tally.count, time.monotonic()


def report(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


# -- process B: the receiver ---------------------------------------------------


def receive_hub(args: argparse.Namespace) -> None:
    setup_django(args)
    from channels.layers import get_channel_layer

    from channels_events import Event, listen
    from channels_events._hub import EVENT_TYPE, group_name, start_hub

    tally = Tally()
    probed = threading.Event()

    @listen(r"bench::Item::.*")
    def count(event: Event) -> None:
        tally.add(event.payload["sent_at"])

    @listen(r"bench::Probe::.*")
    def probe(event: Event) -> None:
        probed.set()

    hub = start_hub()
    deadline = time.monotonic() + 10
    while not hub.joined_groups:
        if time.monotonic() > deadline:
            sys.exit("B: the hub joined no group within 10 s")
        time.sleep(0.01)

    # A probe from another origin proves the subscription works end to end
    # (pubsub's SUBSCRIBE is not acknowledged when group_add returns).
    async def send_probes() -> None:
        layer = get_channel_layer()
        message = {"type": EVENT_TYPE, "event": Event(PROBE).envelope, "origin": "probe"}
        for _ in range(100):
            await layer.group_send(group_name(NAMESPACE), message)
            if await asyncio.to_thread(probed.wait, 0.1):
                return
        sys.exit("B: no probe came back within 10 s")

    asyncio.run(send_probes())
    print("READY", flush=True)
    cpu = time.process_time()
    sent = int(sys.stdin.readline())
    wait_for(tally, sent)
    report({**tally.summary(cpu), "hub_received": hub.received})


def receive_raw(args: argparse.Namespace) -> None:
    setup_django(args)
    from channels.layers import get_channel_layer

    async def main() -> None:
        layer = get_channel_layer()
        channel = await layer.new_channel("bench.raw.")
        await layer.group_add(RAW_GROUP, channel)
        tally = Tally()
        probed = asyncio.Event()

        async def receive_forever() -> None:
            while True:
                message = await layer.receive(channel)
                kind = message["type"]
                if kind == "bench.item":
                    tally.add(message["event"]["payload"]["sent_at"])
                elif kind == "bench.probe":
                    probed.set()
                elif kind == "bench.stop":
                    return

        task = asyncio.create_task(receive_forever())
        for _ in range(100):
            await layer.group_send(RAW_GROUP, {"type": "bench.probe"})
            try:
                await asyncio.wait_for(probed.wait(), 0.1)
                break
            except asyncio.TimeoutError:
                continue
        else:
            sys.exit("B: no probe came back within 10 s")
        print("READY", flush=True)
        cpu = time.process_time()
        sent = int(await asyncio.to_thread(sys.stdin.readline))
        seen, since = tally.count, time.monotonic()
        while tally.count < sent and time.monotonic() - since < QUIET_SECONDS:
            await asyncio.sleep(0.01)
            if tally.count != seen:
                seen, since = tally.count, time.monotonic()
        # Stop by message: cancelling receive() makes the pubsub layer unsubscribe noisily.
        await layer.group_send(RAW_GROUP, {"type": "bench.stop"})
        await asyncio.wait_for(task, 10)
        report(tally.summary(cpu))

    asyncio.run(main())


# -- process A: the sender -----------------------------------------------------


def send_hub(args: argparse.Namespace) -> None:
    setup_django(args)
    from channels_events import dispatch
    from channels_events._hub import get_hub

    hub = get_hub()
    dispatch(WARMUP, {})  # starts the hub's thread and opens its connection
    hub.flush()
    time.sleep(0.2)
    rate = args.rate
    total = int(rate * args.seconds) if rate else args.events
    costs: list[int] = []
    clock = time.perf_counter
    cpu = time.process_time()
    start = clock()
    for i in range(total):
        if rate:
            delay = start + i / rate - clock()
            if delay > 0:
                time.sleep(delay)
        payload = model_payload(i, time.time())
        before = time.perf_counter_ns()
        dispatch(ITEM, payload)
        costs.append(time.perf_counter_ns() - before)
    loop_seconds = clock() - start
    before_flush = clock()
    flushed = hub.flush()
    report(
        {
            "sent": total,
            "cpu_seconds": time.process_time() - cpu,
            "loop_seconds": loop_seconds,
            "flush_seconds": clock() - before_flush,
            "flushed": flushed,
            "dropped": hub.dropped,
            "cost_p50_us": percentile(costs, 50) / 1e3,
            "cost_p99_us": percentile(costs, 99) / 1e3,
        }
    )
    # A normal exit: the hub's atexit hook flushes anything still queued.


def send_raw(args: argparse.Namespace) -> None:
    setup_django(args)
    from channels.layers import get_channel_layer

    async def main() -> None:
        layer = get_channel_layer()
        await layer.group_send(RAW_GROUP, {"type": "bench.warmup"})
        await asyncio.sleep(0.2)
        rate = args.rate
        total = int(rate * args.seconds) if rate else args.events
        clock = time.perf_counter
        cpu = time.process_time()
        start = clock()
        for i in range(total):
            if rate:
                delay = start + i / rate - clock()
                if delay > 0:
                    await asyncio.sleep(delay)
            await layer.group_send(RAW_GROUP, raw_message(i, time.time()))
        loop_seconds = clock() - start
        report(
            {"sent": total, "loop_seconds": loop_seconds, "cpu_seconds": time.process_time() - cpu}
        )

    asyncio.run(main())


# -- the driver ----------------------------------------------------------------


def child_command(
    args: argparse.Namespace, role: str, layer: str, path: str, rate: int
) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--role",
        role,
        "--layer",
        layer,
        "--redis-url",
        args.redis_url,
        "--prefix",
        args.prefix,
        "--events",
        str(args.events),
        "--rate",
        str(rate),
        "--seconds",
        str(args.seconds),
        "--history",
        "0" if path == "hub-nohistory" else "1000",
        "--metrics",
        "off" if path == "hub-nometrics" else "on",
    ]


def last_json(text: str) -> dict[str, Any]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"no result in output: {text!r}")
    return json.loads(lines[-1])


def measure(args: argparse.Namespace, layer: str, path: str, rate: int) -> dict[str, Any]:
    """Run one receiver B and one sender A; return B's result with A's under ``sender``."""
    receiver = subprocess.Popen(
        child_command(args, f"receive-{ROLES[path]}", layer, path, rate),
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdin is not None and receiver.stdout is not None
    try:
        line = receiver.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"receiver did not get ready: {line!r}")
        sender = subprocess.run(
            child_command(args, f"send-{ROLES[path]}", layer, path, rate),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
            timeout=120,
            check=True,
        )
        sent = last_json(sender.stdout)
        receiver.stdin.write(f"{sent['sent']}\n")
        receiver.stdin.flush()
        out, _ = receiver.communicate(timeout=120)
        result = last_json(out)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    result["sender"] = sent
    return result


def median_result(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Return the result of the round whose receiver used the median CPU per event."""
    ordered = sorted(results, key=lambda r: r["cpu_seconds"] / max(1, r["sender"]["sent"]))
    return ordered[len(ordered) // 2]


def delete_keys(url: str, prefix: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()


def ms(value: float) -> str:
    return f"{value:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/1")
    parser.add_argument(
        "--prefix",
        default=f"cebench-{uuid.uuid4().hex[:10]}.",
        help="prefix of every Redis key and channel of this run (default: unique per run)",
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per burst run")
    parser.add_argument("--rate", type=int, default=1000, help="events/s of the latency runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency runs")
    parser.add_argument("--layers", nargs="+", choices=sorted(LAYERS), default=["core", "pubsub"])
    parser.add_argument(
        "--paths", nargs="+", choices=list(ROLES), default=None, help="the paths to measure"
    )
    parser.add_argument(
        "--metrics",
        choices=["on", "off", "both"],
        default="on",
        help="METRICS of the hub paths; both: also the hub path with metrics off, side by side",
    )
    parser.add_argument("--rounds", type=int, default=1, help="measure each path this many times")
    parser.add_argument("--role", help=argparse.SUPPRESS)
    parser.add_argument("--layer", help=argparse.SUPPRESS)
    parser.add_argument("--history", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", args.prefix):
        parser.error("--prefix takes 1 to 40 letters, digits, '_', '.' or '-'")

    roles = {
        "receive-hub": receive_hub,
        "receive-raw": receive_raw,
        "send-hub": send_hub,
        "send-raw": send_raw,
    }
    if args.role:
        roles[args.role](args)
        return

    import redis

    client = redis.Redis.from_url(args.redis_url)
    client.ping()
    client.close()
    results: dict[tuple[str, str, int], dict[str, Any]] = {}
    started = time.monotonic()
    try:
        paths = args.paths or [
            *DEFAULT_PATHS[:1],
            *(["hub-nometrics"] if args.metrics == "both" else []),
            *DEFAULT_PATHS[1:],
        ]
        for layer in args.layers:
            for rate in (0, args.rate):
                rounds: dict[str, list[dict[str, Any]]] = {}
                # Paths take turns within a round: a slow spell hits them all.
                for _ in range(args.rounds):
                    for path in paths:
                        rounds.setdefault(path, []).append(measure(args, layer, path, rate))
                for path, measured in rounds.items():
                    results[layer, path, rate] = median_result(measured)
    finally:
        deleted = delete_keys(args.redis_url, args.prefix)
    print_report(args, results, time.monotonic() - started, deleted)


def print_report(
    args: argparse.Namespace,
    results: dict[tuple[str, str, int], dict[str, Any]],
    seconds: float,
    deleted: int,
) -> None:
    def label(path: str, rate: int) -> str:
        route = "group_send -> receive" if path == "raw" else "dispatch() -> listener"
        names = {"hub-nohistory": "hub, no history", "hub-nometrics": "hub, metrics off"}
        name = names.get(path, path)
        return f"{name}: {route}, " + (f"{rate:,}/s" if rate else "burst")

    print(
        f"Python {sys.version.split()[0]}, {args.redis_url}, prefix {args.prefix!r}: bursts of "
        f"{args.events:,} events, then {args.rate:,} events/s for {args.seconds:g} s; "
        f"{seconds:.0f} s in all, {deleted} key(s) deleted\n"
    )
    print("| layer | path | events/s | p50 latency | p99 latency | delivered |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for (layer, path, rate), result in results.items():
        p50, p99 = (ms(result["p50_ms"]), ms(result["p99_ms"])) if rate else ("-", "-")
        print(
            f"| {layer} | {label(path, rate)} | {result['rate']:,.0f} | {p50} | {p99} "
            f"| {result['delivered']:,}/{result['sender']['sent']:,} |"
        )
    print("\nCPU time per event sent (each process, all its threads):\n")
    print("| layer | path | sender A | receiver B |")
    print("| --- | --- | ---: | ---: |")
    for (layer, path, rate), result in results.items():
        per_event = 1e6 / max(1, result["sender"]["sent"])
        a_cpu = result["sender"]["cpu_seconds"] * per_event
        b_cpu = result["cpu_seconds"] * per_event
        print(f"| {layer} | {label(path, rate)} | {a_cpu:.0f} us | {b_cpu:.0f} us |")
    print()
    for (layer, path, rate), off in results.items():
        on = results.get((layer, "hub", rate))
        if path != "hub-nometrics" or on is None:
            continue
        a_on, a_off = (r["sender"]["cpu_seconds"] / max(1, r["sender"]["sent"]) for r in (on, off))
        b_on, b_off = (r["cpu_seconds"] / max(1, r["sender"]["sent"]) for r in (on, off))
        print(
            f"- {layer}, {'burst' if not rate else f'{rate:,}/s'}: metrics on vs off, CPU per "
            f"published event {a_on / a_off - 1:+.1%} (sender A), per received event "
            f"{b_on / b_off - 1:+.1%} (receiver B)"
        )
    for layer in args.layers:
        if (layer, "hub", 0) not in results or (layer, "raw", 0) not in results:
            continue
        burst = results[layer, "hub", 0]
        paced = results[layer, "hub", args.rate]["sender"]
        a = burst["sender"]
        ratio = burst["rate"] / results[layer, "raw", 0]["rate"]
        print(
            f"- {layer}: hub burst {ratio:.1f}x the raw rate. dispatch() on A's thread at "
            f"{args.rate:,}/s: median {paced['cost_p50_us']:.1f} us, p99 "
            f"{paced['cost_p99_us']:.1f} us. In the burst: "
            f"{a['sent'] / a['loop_seconds']:,.0f} dispatch()/s "
            f"(median {a['cost_p50_us']:.1f} us), "
            f"flush {a['flush_seconds']:.2f} s (ok={a['flushed']}), "
            f"{a['dropped']:,} dropped from A's outbox"
        )


if __name__ == "__main__":
    main()
