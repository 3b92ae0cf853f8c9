"""Fault runs on a bench/topology.py topology: churn, restarts, kills, failover, a stopped server.

Run from the repository root:

    .venv/bin/python bench/faults.py <run> [--clients N] [--seconds S] [--rate R] [--json FILE]

Each run starts a topology (``bench/topology.py``: HAProxy over ``--daphnes``
daphnes of the demo, Redis with Sentinel), connects ``--clients`` clients
through HAProxy (``bench/loadclient.py``, in ``--processes`` processes; they
resume with ``since`` after every reconnect, as the JS client does), starts
a publisher process that calls ``channels_events.dispatch("shop::bench::tick",
{"sent": time.time(), "seq": n})`` ``--rate`` times a second for
``--seconds``, and does to the topology what the run is about, at fixed
moments of the publishing window:

- ``churn``: nothing to the servers; each client's connection is cut every
  5-15 s and the client stays away about 2 s (1,000 clients, 20 events/s,
  120 s unless told otherwise);
- ``rolling``: every daphne in turn gets SIGTERM and is started again, the
  next one 3 s after the last answers again (50 events/s);
- ``sigkill``: one daphne gets SIGKILL, and is started again 3 s later;
- ``failover``: the Redis master gets SIGKILL; the sentinels promote the
  replica; the run reports when they did and when events flowed again;
- ``sigstop``: one daphne gets SIGSTOP, and SIGCONT 15 s later;
- ``steady``: nothing happens (the control run).

``--churn`` churns the clients in any run, as in ``churn``.

After the last event the clients have ``--straggle`` seconds to get it. The
run prints one markdown table: delivered / expected (every client expects
every event), duplicates, out of order, ``gap`` frames, ``lagged`` frames,
events lost without a ``gap`` to say so, the latency of live events
(publish to receipt) and the replay latency (from a resumed ``subscribe``
to the last event it replayed) at p50 and p99, and reconnects. Events a
client without a ``gap`` lacks count as lost silently only if it has the
last event; otherwise it was still catching up when the wait ended. ``--json``
also writes the figures, the timeline of delivered share and latency per
second and the moments of each fault, for ``bench/scale.py``.

Every process this starts is stopped on the way out, and the topology's
temporary directory removed. Keep the load small on a shared machine
(``--clients 40 --seconds 10``) unless measuring.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.loadclient import load
from bench.topology import Topology, exit_on_sigterm, master_port

ROOT = Path(__file__).resolve().parent.parent
EVENT_NAME = "shop::bench::tick"
RUNS = ("churn", "rolling", "sigkill", "failover", "sigstop", "steady")
DEFAULTS = {
    "churn": {"clients": 1000, "seconds": 120, "rate": 20},
    "rolling": {"clients": 1000, "seconds": 60, "rate": 50},
    "sigkill": {"clients": 1000, "seconds": 60, "rate": 20},
    "failover": {"clients": 1000, "seconds": 60, "rate": 20},
    "sigstop": {"clients": 1000, "seconds": 60, "rate": 20},
    "steady": {"clients": 1000, "seconds": 60, "rate": 20},
}
RESTART_PAUSE = 3.0
_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception)\b")
STOP_SECONDS = 15.0


# -- the publisher process -------------------------------------------------------


def run_publisher(rate: float, total: int) -> None:
    """Dispatch ``total`` events at ``rate`` a second, once told ``go``; print when done."""
    import django

    django.setup()
    from channels_events import dispatch
    from channels_events._hub import get_hub

    hub = get_hub()
    dispatch("shop::bench::warmup", {})  # starts the hub's thread and its connection
    hub.flush()
    print("ready", flush=True)
    sys.stdin.readline()
    clock = time.perf_counter
    start = clock()
    print(json.dumps({"start": time.time()}), flush=True)
    for seq in range(total):
        delay = start + seq / rate - clock()
        if delay > 0:
            time.sleep(delay)
        dispatch(EVENT_NAME, {"sent": time.time(), "seq": seq})
    flushed = hub.flush(60)
    print(json.dumps({"sent": total, "seconds": clock() - start, "flushed": flushed}), flush=True)


# -- children ---------------------------------------------------------------------


class Child:
    """A child process whose stdout lines a thread reads into a queue."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def expect(self, timeout: float) -> str:
        """Return the next line the child printed; raise if none comes in ``timeout`` s."""
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

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.pump.join(5)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


# -- the faults ----------------------------------------------------------------------


class Faults:
    """What a run does to its topology, and when it did it (``time.time()``)."""

    def __init__(self, topology: Topology, run: str, seconds: float) -> None:
        self.topology = topology
        self.run = run
        self.seconds = seconds
        self.marks: list[tuple[float, str]] = []
        self.failover: dict[str, float] = {}

    def mark(self, what: str) -> None:
        self.marks.append((time.time(), what))
        print(f"[faults] {time.strftime('%H:%M:%S')} {what}", file=sys.stderr, flush=True)

    def play(self, start: float, stop: threading.Event) -> None:
        """Do the run's faults, timed from ``start`` (publishing began); give up on ``stop``."""

        def at(fraction: float) -> bool:
            return not stop.wait(max(0.0, start + fraction * self.seconds - time.time()))

        servers = self.topology.servers
        if self.run == "rolling" and at(0.15):
            for server in servers:
                self.mark(f"SIGTERM {server.name}")
                self.topology.restart(server, signal.SIGTERM)
                self.mark(f"{server.name} answers again")
                if stop.wait(RESTART_PAUSE):
                    return
        elif self.run == "sigkill" and at(0.3):
            self.mark(f"SIGKILL {servers[0].name}")
            self.topology.halt(servers[0], signal.SIGKILL)
            if stop.wait(RESTART_PAUSE):
                return
            self.topology.spawn(servers[0])
            self.topology.wait(servers[0], lambda s: True)
            self.mark(f"{servers[0].name} started again")
        elif self.run == "sigstop" and at(0.25):
            self.mark(f"SIGSTOP {servers[0].name}")
            self.topology.send_signal(servers[0], signal.SIGSTOP)
            stop.wait(STOP_SECONDS)
            self.topology.send_signal(servers[0], signal.SIGCONT)
            self.mark(f"SIGCONT {servers[0].name}")
        elif self.run == "failover" and at(0.3):
            master = self.topology.redis[0]
            self.failover["killed"] = time.time()
            self.mark(f"SIGKILL the Redis master ({master.name})")
            self.topology.halt(master, signal.SIGKILL)
            sentinel = self.topology.sentinels[0].port
            while not stop.wait(0.05):
                now = master_port(sentinel)
                if now is not None and now != master.port:
                    self.failover["promoted"] = time.time()
                    self.mark(f"the sentinels promoted 127.0.0.1:{now}")
                    break


# -- the driver ------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Return the nearest-rank ``q`` percentile (0-100) of sorted ``ordered``."""
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Run one fault run; return its figures."""
    total = round(args.rate * args.seconds)
    workdir = Path(tempfile.mkdtemp(prefix="faults-"))
    try:
        return _drive(args, total, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _drive(args: argparse.Namespace, total: int, workdir: Path) -> dict[str, Any]:
    children: list[Child] = []
    stop = threading.Event()
    with Topology(daphnes=args.daphnes, layer=args.layer, history=args.history) as topology:
        try:
            outs = []
            per_process = [args.clients // args.processes] * args.processes
            for index in range(args.clients % args.processes):
                per_process[index] += 1
            for index, count in enumerate(c for c in per_process if c):
                out = workdir / f"clients{index}.json"
                outs.append(out)
                argv = [sys.executable, str(ROOT / "bench" / "loadclient.py"), "--url"]
                argv += [topology.url, "--clients", str(count), "--total", str(total)]
                argv += ["--out", str(out), "--straggle", str(args.straggle)]
                if args.run == "churn" or args.churn:
                    argv.append("--churn")
                children.append(Child(f"clients{index}", argv))
            for child in children:
                if child.expect(180) != "ready":
                    raise RuntimeError(f"{child.name} did not get ready")
            publisher = Child(
                "publisher",
                [
                    sys.executable,
                    __file__,
                    "--role",
                    "publisher",
                    "--rate",
                    str(args.rate),
                    "--total",
                    str(total),
                ],
                env=topology.django_env(),
            )
            children.append(publisher)
            if publisher.expect(60) != "ready":
                raise RuntimeError("the publisher did not get ready")
            for child in children[:-1]:
                child.tell("go")
            publisher.tell("go")
            start = json.loads(publisher.expect(10))["start"]
            faults = Faults(topology, args.run, args.seconds)
            player = threading.Thread(target=faults.play, args=(start, stop), daemon=True)
            player.start()
            published = json.loads(publisher.expect(args.seconds + 120))
            player.join(STOP_SECONDS + 60)
            for child in children[:-1]:
                child.tell("end")
            for child in children[:-1]:
                if child.expect(args.straggle + 60) != "done":
                    raise RuntimeError(f"{child.name} did not finish")
            logs = {p.name: topology.log(p)[-20000:] for p in topology.processes()}
        finally:
            stop.set()
            for child in children:
                child.stop()
    result = summarize(args, total, start, outs, faults, published)
    result["logs"] = {name: text for name, text in logs.items() if "Traceback" in text}
    # What the servers said about answering gap (the history, the group).
    result["gap_reasons"] = sorted(
        {line for text in logs.values() for line in text.splitlines() if "gap" in line}
    )
    return result


def label(args: argparse.Namespace) -> str:
    """Return the run's name, ``+ churn`` added where ``--churn`` churns a fault run."""
    return f"{args.run} + churn" if args.churn and args.run != "churn" else args.run


def summarize(
    args: argparse.Namespace,
    total: int,
    start: float,
    outs: list[Path],
    faults: Faults,
    published: dict[str, Any],
) -> dict[str, Any]:
    """Read every client process's file; return the run's figures and timeline."""
    clients: list[dict[str, Any]] = []
    per_event = [0] * total
    replays: list[float] = []
    comebacks: list[float] = []
    lag: list[float] = []
    live: list[float] = []
    seconds = math.ceil(args.seconds)
    by_second: list[list[float]] = [[] for _ in range(seconds + 1)]
    flowing_again: float | None = None
    killed = faults.failover.get("killed")
    for out in outs:
        summary, sent, latency = load(out)
        clients.extend(summary["clients"])
        for seq, count in enumerate(summary["per_event"]):
            per_event[seq] += count
        replays.extend(summary["replays"])
        comebacks.extend(summary["comebacks"])
        lag.extend(summary["lag"])
        for when, late in zip(sent, latency, strict=True):
            second = int(when - start)
            if 0 <= second <= seconds:
                by_second[second].append(late)
            if killed is not None and when > killed:
                received = when + late
                if flowing_again is None or received < flowing_again:
                    flowing_again = received
        live.extend(latency)
    expected = total * len(clients)
    delivered = sum(c["delivered"] for c in clients)
    # A client without the last event was still catching up when the wait for
    # stragglers ended: what it lacks is counted apart, not as lost.
    silent = sum(total - c["delivered"] for c in clients if not c["gaps"] and c["has_last"])
    behind = sum(total - c["delivered"] for c in clients if not c["gaps"] and not c["has_last"])
    live.sort()
    replays.sort()
    comebacks.sort()
    lag.sort()
    per_second = []
    for second in range(seconds):
        first, last = round(second * args.rate), min(total, round((second + 1) * args.rate))
        events = last - first
        got = sum(per_event[first:last])
        late = sorted(by_second[second])
        per_second.append(
            {
                "second": second,
                "delivered": got / (events * len(clients)) if events and clients else None,
                # Live within a second of publication, not later nor by a replay.
                "on_time": (
                    sum(1 for value in late if value <= 1.0) / (events * len(clients))
                    if events and clients
                    else None
                ),
                "p50": percentile(late, 50) if late else None,
                "p99": percentile(late, 99) if late else None,
            }
        )
    result: dict[str, Any] = {
        "run": label(args),
        "command": "bench/faults.py " + " ".join(shown_argv(args.argv)),
        "clients": len(clients),
        "daphnes": args.daphnes,
        "layer": args.layer,
        "rate": args.rate,
        "seconds": args.seconds,
        "events": total,
        "published": published,
        "expected": expected,
        "delivered": delivered,
        "duplicates": sum(c["duplicates"] for c in clients),
        "out_of_order": sum(c["out_of_order"] for c in clients),
        "gaps": sum(c["gaps"] for c in clients),
        "clients_with_gap": sum(1 for c in clients if c["gaps"]),
        "lagged": sum(c["lagged"] for c in clients),
        "lost_silently": silent,
        "behind": behind,
        "clients_short": sum(1 for c in clients if c["delivered"] < total),
        # Short of the last event: still catching up when the wait for stragglers ended.
        "clients_without_last": sum(1 for c in clients if not c["has_last"]),
        # Clients that waited more than half of a SIGSTOP for some event: those
        # on the stopped server.
        "clients_stalled": sum(1 for c in clients if c["worst"] > STOP_SECONDS / 2),
        "others_worst": max(
            (c["worst"] for c in clients if c["worst"] <= STOP_SECONDS / 2), default=0.0
        ),
        "reconnects": sum(c["reconnects"] for c in clients),
        "failed_connects": sum(c["failed_connects"] for c in clients),
        "live_p50": percentile(live, 50),
        "live_p99": percentile(live, 99),
        "live_max": live[-1] if live else float("nan"),
        "replay_p50": percentile(replays, 50),
        "replay_p99": percentile(replays, 99),
        "replays": len(replays),
        "comebacks": len(comebacks),
        "comeback_p50": percentile(comebacks, 50),
        "comeback_p99": percentile(comebacks, 99),
        "client_lag_p99": percentile(lag, 99),
        "marks": [(when - start, what) for when, what in faults.marks],
        "loadavg": os.getloadavg()[0],
        "per_second": per_second,
    }
    if killed is not None:
        promoted = faults.failover.get("promoted")
        result["promoted_after"] = promoted - killed if promoted else None
        result["flowing_after"] = flowing_again - killed if flowing_again else None
    return result


def shown_argv(argv: list[str]) -> list[str]:
    """Return ``argv`` without ``--json FILE``: the command as a reader would type it."""
    shown: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--json":
            skip = True
        elif not word.startswith("--json="):
            shown.append(word)
    return shown


def table(results: list[dict[str, Any]]) -> str:
    """Return the markdown table of ``results``, one row per run."""

    def ms(value: float) -> str:
        return "-" if value is None or math.isnan(value) else f"{value * 1000:,.0f}"

    lines = [
        "| run | clients | events/s x s | delivered / expected | dup | out of order | gap "
        "| lagged | lost silently | live p50 / p99 ms | replay p50 / p99 ms | reconnects |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        share = r["delivered"] / r["expected"] if r["expected"] else 0.0
        lines.append(
            f"| {r['run']} | {r['clients']:,} | {r['rate']:g} x {r['seconds']:g} "
            f"| {r['delivered']:,} / {r['expected']:,} ({share:.2%}) | {r['duplicates']:,} "
            f"| {r['out_of_order']:,} | {r['gaps']:,} | {r['lagged']:,} "
            f"| {r['lost_silently']:,} | {ms(r['live_p50'])} / {ms(r['live_p99'])} "
            f"| {ms(r['replay_p50'])} / {ms(r['replay_p99'])} | {r['reconnects']:,} |"
        )
    return "\n".join(lines)


def notes(result: dict[str, Any]) -> str:
    """Return the lines under the table: the faults' moments, failover times, tracebacks."""
    lines = [f"- {when:6.1f} s: {what}" for when, what in result["marks"]]
    if "flowing_after" in result:
        promoted = result.get("promoted_after")
        flowing = result.get("flowing_after")
        lines.append(
            f"- the replica was promoted {promoted:.1f} s after the kill"
            if promoted is not None
            else "- the sentinels promoted no replica within the run"
        )
        lines.append(
            f"- events flowed again {flowing:.1f} s after the kill"
            if flowing is not None
            else "- no event published after the kill reached a client"
        )
    if result.get("clients_without_last"):
        lines.append(
            f"- {result['clients_without_last']:,} clients were still catching up when the "
            "wait for stragglers ended"
            + (
                f" ({result['behind']:,} events not yet received by those without a `gap`)"
                if "behind" in result
                else " (what those without a `gap` lacked is counted as lost silently)"
            )
        )
    if result.get("comebacks"):
        lines.append(
            f"- {result['comebacks']:,} connections closed by a server came back (closed to "
            f"`welcome` through HAProxy, with the JS client's backoff) in "
            f"{result['comeback_p50']:.2f} s at p50, {result['comeback_p99']:.2f} s at p99"
        )
    if "client_lag_p99" in result:
        lines.append(
            f"- the client processes' own timer lateness (their part of the latency): "
            f"{result['client_lag_p99'] * 1000:,.0f} ms at p99"
        )
    if result["run"] == "sigstop":
        lines.append(
            f"- {result['clients_stalled']} clients waited more than {STOP_SECONDS / 2:g} s for "
            f"an event (those on the stopped server); the others' slowest live event "
            f"took {result['others_worst'] * 1000:,.0f} ms"
        )
    for name, text in result.get("logs", {}).items():
        errors = [line for line in text.splitlines() if _ERROR_LINE.match(line)]
        where = "channels_redis' pub/sub receive task" if "channels_redis/pubsub.py" in text else ""
        what = f": {errors[-1][:120]}" if errors else ""
        lines.append(f"- {name} logged a traceback{' in ' + where if where else ''}{what}")
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    """Return the options of ``argv``, each run's defaults filled in."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("driver", "publisher"), default="driver")
    parser.add_argument("run", nargs="?", choices=RUNS)
    parser.add_argument("--clients", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--total", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--daphnes", type=int, default=2)
    parser.add_argument("--layer", choices=("sentinel", "sharded"), default="sentinel")
    parser.add_argument("--history", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=4, help="client processes")
    parser.add_argument("--straggle", type=float, default=20.0)
    parser.add_argument("--churn", action="store_true", help="churn the clients in any run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.role == "driver":
        if args.run is None:
            parser.error(f"name a run: {', '.join(RUNS)}")
        for key, value in DEFAULTS[args.run].items():
            if getattr(args, key) is None:
                setattr(args, key, value)
    return args


def run(argv: list[str]) -> dict[str, Any]:
    """Do the fault run ``argv`` names (as on the command line); return its figures."""
    return drive(parse(argv))


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.role == "publisher":
        run_publisher(args.rate, args.total)
        return 0
    exit_on_sigterm()
    result = drive(args)
    print(table([result]))
    print()
    print(notes(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
