"""Local dispatch cost: channels-events next to a linear regex scan and Django's Signal.

Run from the repository root:

    .venv/bin/python bench/dispatch.py

For 1, 100 and 1000 registered patterns (exactly one matching the event),
prints nanoseconds per event for:

- ``channels-events``: ``Dispatcher.dispatch(name, payload)``, which looks up
  the cached listener list for the name;
- ``linear scan``: ``fullmatch`` every pattern per event and call the ones
  that match, as django-event-system does;
- ``Signal.send``: Django's ``Signal.send`` with one receiver (no patterns).

Each figure is the best of several rounds, to keep scheduler noise out.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.dispatch import Signal

from channels_events import Dispatcher

EVENT = "shop::Order::created"
PAYLOAD = {"pk": 42, "status": "new"}


def patterns(count: int) -> list[str]:
    """Return ``count`` patterns of which only the last matches EVENT."""
    return [f"ns{i}::Model{i}::.*" for i in range(count - 1)] + [r"shop::Order::.*"]


def timed(run: Callable[[int], None], iterations: int, rounds: int) -> float:
    """Return the best nanoseconds per iteration over ``rounds`` runs."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter_ns()
        run(iterations)
        best = min(best, (time.perf_counter_ns() - start) / iterations)
    return best


def bench_dispatcher(count: int, iterations: int, rounds: int) -> float:
    dispatcher = Dispatcher()
    hits = []
    for source in patterns(count):
        dispatcher.connect(hits.append, source)
    dispatch = dispatcher.dispatch

    def run(n: int) -> None:
        for _ in range(n):
            dispatch(EVENT, PAYLOAD)

    result = timed(run, iterations, rounds)
    assert hits, "the matching listener never ran"
    return result


def bench_linear(count: int, iterations: int, rounds: int) -> float:
    hits: list[tuple[str, dict[str, object]]] = []
    handlers = [(re.compile(source), hits.append) for source in patterns(count)]

    def dispatch(name: str, payload: dict[str, object]) -> None:
        for regex, handler in handlers:
            if regex.fullmatch(name):
                handler((name, payload))

    def run(n: int) -> None:
        for _ in range(n):
            dispatch(EVENT, PAYLOAD)

    result = timed(run, iterations, rounds)
    assert hits
    return result


def bench_signal(iterations: int, rounds: int) -> float:
    signal = Signal()
    hits = []

    def receiver(sender: object, **kwargs: object) -> None:
        hits.append(kwargs)

    signal.connect(receiver, weak=False)

    def run(n: int) -> None:
        for _ in range(n):
            signal.send(sender=EVENT, payload=PAYLOAD)

    result = timed(run, iterations, rounds)
    assert hits
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bench_dispatcher(1, args.iterations, 1)  # warm up the interpreter and caches
    signal_ns = bench_signal(args.iterations, args.rounds)
    print(f"Python {sys.version.split()[0]}, best of {args.rounds} x {args.iterations} events\n")
    print("| patterns | channels-events | linear scan | Signal.send (1 receiver) | speed-up |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for count in (1, 100, 1000):
        # The linear scan is slow at 1000 patterns; fewer iterations keep the run short.
        linear_iterations = max(1000, args.iterations // max(1, count // 10))
        ours = bench_dispatcher(count, args.iterations, args.rounds)
        linear = bench_linear(count, linear_iterations, args.rounds)
        print(
            f"| {count} | {ours:,.0f} ns | {linear:,.0f} ns | {signal_ns:,.0f} ns "
            f"| {linear / ours:,.1f}x |"
        )


if __name__ == "__main__":
    main()
