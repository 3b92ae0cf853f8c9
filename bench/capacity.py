"""Capacity of one server process: websockets held at 1 event/s each, and memory per connection.

Run from the repository root:

    .venv/bin/python bench/capacity.py [--servers daphne,uvicorn,floor] [--steps 1000,2000,...]

For each server, one process on a loopback port, over one Redis server (a
``bench/topology.py`` topology with ``--layer single``, no balancer):

- ``daphne``: the demo (``asgi:application``, settings
  ``bench.topology_settings``) under daphne; clients subscribe to
  ``shop::bench::tick``; a publisher process calls ``dispatch()`` once a
  second (``bench/faults.py --role publisher``);
- ``uvicorn``: the same application under uvicorn;
- ``floor``: a bare ``websockets`` server (``--role floor``) that answers
  ``welcome`` and ``subscribed`` and writes every message of a Redis pub/sub
  channel, already a frame, to every subscribed connection; the publisher
  ``PUBLISH``es the same frames once a second.

Each step connects that many clients (``bench/loadclient.py``, 2,500 a
process at most), reads the server's RSS before the first and after the last
connection (KB per connection above its idle size), publishes one event a
second for ``--seconds``, and reads delivered / expected, the p50 and p99 of
publish-to-receipt latency, the server's CPU share, and the client
processes' own timer lateness (their part of the latency). A step passes
with every event delivered and p99 at most 1 s. A server stops at its first
failing step, or when a step takes longer than ``--step-timeout`` seconds.
``--json`` also writes the figures for ``bench/scale.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.faults import Child, percentile, shown_argv
from bench.loadclient import load
from bench.topology import Process, Topology, exit_on_sigterm, websocket_welcome

ROOT = Path(__file__).resolve().parent.parent
PER_PROCESS = 2500
SERVERS = ("daphne", "uvicorn", "floor")
STEPS = (1000, 2000, 4000, 8000, 10000)
FLOOR_CHANNEL = "capacity:floor"
P99_TARGET = 1.0


# -- the floor server and its publisher --------------------------------------------


async def floor_server(port: int, redis_url: str) -> None:
    """Serve bare websockets; write each frame published on FLOOR_CHANNEL to every subscriber."""
    import redis.asyncio as aioredis
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    subscribers: set[ServerConnection] = set()

    async def handle(ws: ServerConnection) -> None:
        await ws.send('{"type":"welcome","protocol":1,"connection":"floor"}')
        async for message in ws:
            request = json.loads(message)
            if request.get("type") == "subscribe":
                answer = {"type": "subscribed", "id": request["id"], "namespace": "shop"}
                await ws.send(json.dumps({**answer, "last": None}))
                subscribers.add(ws)
        subscribers.discard(ws)

    client = aioredis.Redis.from_url(redis_url)
    pubsub = client.pubsub()
    await pubsub.subscribe(FLOOR_CHANNEL)
    async with serve(handle, "127.0.0.1", port, compression=None, ping_interval=None):
        async for message in pubsub.listen():
            if message["type"] == "message":
                broadcast(subscribers, message["data"].decode())


def floor_publisher(redis_url: str, total: int) -> None:
    """PUBLISH one event frame a second, shaped as channels_events writes it."""
    import redis

    from channels_events._events import new_event_id

    client = redis.Redis.from_url(redis_url)
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    print(json.dumps({"start": time.time()}), flush=True)
    for seq in range(total):
        delay = start + seq - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent = time.time()
        event = {
            "id": new_event_id(sent),
            "name": "shop::bench::tick",
            "namespace": "shop",
            "payload": {"sent": sent, "seq": seq},
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(sent)),
        }
        frame = {"type": "event", "subscriptions": ["s1"], "event": event}
        client.publish(FLOOR_CHANNEL, json.dumps(frame, separators=(",", ":")))
    print(json.dumps({"sent": total, "flushed": True}), flush=True)


# -- measuring ------------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def step(args: argparse.Namespace, server: str, clients: int) -> dict[str, Any]:
    """Measure one server at one number of clients; return the figures."""
    workdir = Path(tempfile.mkdtemp(prefix="capacity-"))
    try:
        return _step(args, server, clients, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _step(args: argparse.Namespace, server: str, clients: int, workdir: Path) -> dict[str, Any]:
    topology = Topology(daphnes=1, layer="single", balanced=False, server=server)
    children: list[Child] = []
    total = args.seconds
    started = time.monotonic()
    with topology:
        redis_url = topology.hosts()[0]
        if server == "floor":
            # The topology's daphne is not used: the floor takes its own port.
            topology.halt(topology.servers[0])
            port = topology.servers[0].port
            floor = Process("floor", port, [sys.executable, __file__, "--role", "floor"])
            floor.argv += ["--port", str(port), "--redis-url", redis_url]
            topology.servers[0] = floor
            topology.spawn(floor)
            topology.wait(floor, lambda s: websocket_welcome(s.port))
        target = topology.servers[0]
        assert target.pid is not None
        url = f"ws://127.0.0.1:{target.port}/ws/events/"
        try:
            idle = rss_kb(target.pid)
            outs = []
            count = math.ceil(clients / PER_PROCESS)
            for index in range(count):
                share = clients // count + (1 if index < clients % count else 0)
                out = workdir / f"clients{index}.json"
                outs.append(out)
                argv = [sys.executable, str(ROOT / "bench" / "loadclient.py"), "--url", url]
                argv += ["--clients", str(share), "--total", str(total), "--out", str(out)]
                argv += ["--straggle", "10", "--open-timeout", str(args.step_timeout)]
                children.append(Child(f"clients{index}", argv))
            for child in children:
                if child.expect(args.step_timeout) != "ready":
                    raise RuntimeError(f"{child.name} did not get ready")
            time.sleep(2)  # let the server settle after the last handshake
            held = rss_kb(target.pid)
            if server == "floor":
                argv = [sys.executable, __file__, "--role", "floor-publisher"]
                argv += ["--redis-url", redis_url, "--total", str(total)]
                publisher = Child("publisher", argv)
            else:
                argv = [sys.executable, str(ROOT / "bench" / "faults.py"), "--role", "publisher"]
                argv += ["--rate", "1", "--total", str(total)]
                publisher = Child("publisher", argv, env=topology.django_env())
            children.append(publisher)
            if publisher.expect(60) != "ready":
                raise RuntimeError("the publisher did not get ready")
            for child in children[:-1]:
                child.tell("go")
            cpu_before = cpu_seconds(target.pid)
            publisher.tell("go")
            start = json.loads(publisher.expect(10))["start"]
            publisher.expect(total + 60)
            for child in children[:-1]:
                child.tell("end")
            for child in children[:-1]:
                child.expect(60)
            cpu = (cpu_seconds(target.pid) - cpu_before) / max(time.time() - start, 1e-9)
        finally:
            for child in children:
                child.stop()
    latencies: list[float] = []
    lag: list[float] = []
    delivered = 0
    for out in outs:
        summary, _sent, latency = load(out)
        delivered += sum(c["delivered"] for c in summary["clients"])
        latencies.extend(latency)
        lag.extend(summary["lag"])
    latencies.sort()
    lag.sort()
    expected = clients * total
    p99 = percentile(latencies, 99)
    return {
        "server": server,
        "clients": clients,
        "expected": expected,
        "delivered": delivered,
        "p50": percentile(latencies, 50),
        "p99": p99,
        "client_lag_p99": percentile(lag, 99),
        "cpu": cpu,
        "idle_kb": idle,
        "held_kb": held,
        "kb_per_connection": (held - idle) / clients,
        "passed": delivered == expected and p99 <= P99_TARGET,
        "step_seconds": time.monotonic() - started,
        "loadavg": os.getloadavg()[0],
    }


def table(rows: list[dict[str, Any]]) -> str:
    """Return the markdown table of the steps measured."""
    lines = [
        "| server | clients | delivered / expected | p50 ms | p99 ms | client lag p99 ms "
        "| server CPU | KB per connection | passed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        share = r["delivered"] / r["expected"] if r["expected"] else 0.0
        lines.append(
            f"| {r['server']} | {r['clients']:,} | {r['delivered']:,} / {r['expected']:,} "
            f"({share:.2%}) | {r['p50'] * 1000:,.0f} | {r['p99'] * 1000:,.0f} "
            f"| {r['client_lag_p99'] * 1000:,.0f} | {r['cpu']:.0%} "
            f"| {r['kb_per_connection']:.1f} | {'yes' if r['passed'] else 'no'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("driver", "floor", "floor-publisher"))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--seconds", type=int, default=20, help="events per step (1 a second)")
    parser.add_argument("--step-timeout", type=float, default=240.0)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis-url", help=argparse.SUPPRESS)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    raise_fd_limit()
    if args.role == "floor":
        asyncio.run(floor_server(args.port, args.redis_url))
        return 0
    if args.role == "floor-publisher":
        floor_publisher(args.redis_url, args.total)
        return 0
    exit_on_sigterm()
    rows = []
    for server in args.servers.split(","):
        for clients in map(int, args.steps.split(",")):
            try:
                row = step(args, server, clients)
            except Exception as exc:  # a step that breaks is a failed step, not the end
                print(f"[capacity] {server} at {clients}: {exc}", file=sys.stderr, flush=True)
                break
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
            if not row["passed"] or row["step_seconds"] > args.step_timeout:
                break
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "bench/capacity.py " + " ".join(shown_argv(argv))
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
