"""Run the fault runs and the capacity steps, and write docs/performance/scale.md with its plots.

Run from the repository root:

    .venv/bin/python bench/scale.py [--runs churn,rolling,sigkill,failover,sigstop] [--capacity]
    .venv/bin/python bench/scale.py --page-only

Each fault run is ``bench/faults.py <run>`` at its full size (1,000 clients
through HAProxy over two daphnes on Redis with Sentinel; ``--clients``,
``--seconds`` scale them down), and ``--capacity`` adds ``bench/capacity.py``.
Their figures go to ``docs/performance/scale/<run>.json``; then, from every
such file there, the page ``docs/performance/scale.md`` is written: the
tables, each target met or not (with what limits it where missed), and one
plot per run (``scale-<run>.png``: delivered share and latency per second of
publishing, with the moments of the faults), and one of the capacity steps.
``--page-only`` measures nothing and writes the page from the files there.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import capacity, faults
from bench.topology import exit_on_sigterm

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "performance" / "scale.md"
DATA = PAGE.with_suffix("")
ORDER = ("churn", "rolling", "sigkill", "failover", "failover+churn", "sigstop", "steady")

#: What limits each target where it was missed, and what would move it.
LIMITS = {
    "capacity": (
        "One daphne process runs every connection's writer, the hub and Twisted's "
        "protocol on one core; at 1 event/s per connection the per-frame cost of "
        "daphne's websocket framing and the ASGI send path sets the ceiling, and "
        "the load generator shares the same two cores. More processes behind the "
        "balancer (one per core) scale it out; under uvicorn the same code holds "
        "more per process."
    ),
    "delivery": (
        "On these two shared cores the full-size runs saturate the servers: at 1,000 "
        "clients each daphne writes 10,000 (at 20 events/s) to 25,000 (at 50) frames "
        "a second, churn adds about 100 reconnects a second (a new ASGI connection "
        "and a history read each), and HAProxy, Redis, the publisher and four client "
        "processes share the same cores. Live latency then grows to seconds, reads of "
        "the history pass their 2 s timeout and the server answers `gap`, as the "
        "protocol says, and clients cut again before they caught up fall further "
        "behind. No client lost an event without being told (*lost silently* is 0). "
        "The same runs at 100 clients (`tests/test_topology.py`, and the smaller runs "
        "here) deliver every event. What would move it: cores for the servers (one "
        "daphne per core, the load generator elsewhere), a cheaper connect path, and "
        "a catch-up that waits for a slow history rather than answering `gap`."
    ),
    "failover-loss": (
        "While the master is down the hub's sender cannot record events in the "
        "history, and sends them on regardless (it logs how many went unrecorded); "
        "and Redis replicates asynchronously, so the promoted replica may lack the "
        "last entries the old master took. A client that was away then resumes "
        "from a history with a hole in it, and the replay cannot tell. What would "
        "move it: a sequence number per namespace kept with the history, so that a "
        "replay across a hole answers `gap` (or holding publication until the "
        "history has taken the events, and `WAIT`ing for the replica)."
    ),
    "failover": (
        "Events flow again once the sentinels have agreed the master is down "
        "(`down-after-milliseconds` 1000 here) and promoted the replica, and the "
        "layers' connections have asked the sentinels again; a shorter "
        "`down-after-milliseconds` moves it, at the price of false alarms."
    ),
}


def run_faults(args: argparse.Namespace) -> None:
    DATA.mkdir(parents=True, exist_ok=True)
    for run in args.runs.split(","):
        # "failover+churn": the failover run with churning clients.
        name, _, churn = run.partition("+")
        # A smaller run beside the full one: "churn@300" keeps its own file.
        label = f"{run}@{args.clients}" if args.clients else run
        argv = [name, "--json", str(DATA / f"{label}.json")]
        if churn:
            argv.append("--churn")
        if args.clients:
            argv += ["--clients", str(args.clients)]
        if args.seconds:
            argv += ["--seconds", str(args.seconds)]
        argv += ["--straggle", str(args.straggle)]
        print(f"[scale] bench/faults.py {' '.join(argv)}", file=sys.stderr, flush=True)
        faults.main(argv)


def load_results() -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    def order(path: Path) -> tuple[int, str]:
        name = path.stem.partition("@")[0]
        return (ORDER.index(name) if name in ORDER else len(ORDER), path.stem)

    found = [path for path in DATA.glob("*.json") if path.stem != "capacity"]
    runs = [json.loads(path.read_text()) for path in sorted(found, key=order)]
    path = DATA / "capacity.json"
    return runs, json.loads(path.read_text()) if path.exists() else None


# -- plots ------------------------------------------------------------------------------


def plot_run(result: dict[str, Any], path: Path) -> None:
    """Write the delivered share and latency per second of ``result``, faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["per_second"]
    seconds = [row["second"] for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    share = [100 * row["delivered"] if row["delivered"] is not None else math.nan for row in rows]
    top.plot(seconds, share, color="tab:green", label="delivered in the end")
    on_time = [100 * row["on_time"] if row.get("on_time") is not None else math.nan for row in rows]
    top.plot(seconds, on_time, color="tab:orange", label="live within 1 s")
    top.set_ylabel("delivered (%)")
    lowest = min((v for v in share + on_time if not math.isnan(v)), default=90.0)
    top.set_ylim(min(90.0, lowest) - 1, 101)
    for key, color in (("p50", "tab:blue"), ("p99", "tab:red")):
        values = [1000 * row[key] if row[key] is not None else math.nan for row in rows]
        bottom.plot(seconds, values, color=color, label=f"live {key}")
    bottom.set_yscale("log")
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("seconds of publishing (events grouped by the second they were published)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        for when, _what in result["marks"]:
            ax.axvline(when, color="grey", linestyle="--", linewidth=1)
    for when, what in result["marks"]:
        top.annotate(
            what,
            (when, 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=7,
            va="top",
            ha="right",
            color="dimgrey",
        )
    top.legend(loc="lower left", ncols=2)
    bottom.legend(loc="upper right", ncols=2)
    fig.suptitle(f"{result['command']}", x=0.02, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_capacity(data: dict[str, Any], path: Path) -> None:
    """Write p99 latency and KB per connection against clients, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    servers = list(dict.fromkeys(row["server"] for row in data["rows"]))
    for server in servers:
        rows = [row for row in data["rows"] if row["server"] == server]
        clients = [row["clients"] for row in rows]
        left.plot(clients, [1000 * row["p99"] for row in rows], marker="o", label=server)
        right.plot(clients, [row["kb_per_connection"] for row in rows], marker="o", label=server)
    left.axhline(1000 * capacity.P99_TARGET, color="grey", linestyle="--", linewidth=1)
    left.set_ylabel("p99 latency (ms)")
    right.set_ylabel("KB per connection above idle")
    for ax in (left, right):
        ax.set_xlabel("websockets, 1 event/s each")
        ax.grid(alpha=0.3)
    fig.legend(*left.get_legend_handles_labels(), loc="upper right", ncols=len(servers))
    fig.suptitle(data["command"], x=0.02, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the page ----------------------------------------------------------------------------


def verdicts(runs: list[dict[str, Any]], cap: dict[str, Any] | None) -> list[str]:
    """Return one line per target: met or missed, with the figure that says so."""
    lines = []
    by_run: dict[str, dict[str, Any]] = {}
    for r in runs:
        by_run.setdefault(r["run"], r)  # the full-size run comes first
    told = False  # the note on delivery once, under the first run that missed
    for run in ("churn", "rolling", "sigkill"):
        r = by_run.get(run)
        if r is None:
            continue
        met = r["delivered"] == r["expected"] and not r["duplicates"] and not r["out_of_order"]
        lines.append(
            f"- **{run}**: 100% delivered, none twice, in order: "
            f"{'met' if met else 'missed'} ({r['delivered'] / r['expected']:.3%}, "
            f"{r['duplicates']} duplicates, {r['out_of_order']} out of order, "
            f"{r['gaps']:,} `gap`, {r['lost_silently']:,} lost silently)."
        )
        if not met and not told:
            told = True
            lines.append(f"  {LIMITS['delivery']}")
    for r in (by_run.get("failover"), by_run.get("failover + churn")):
        if r is None:
            continue
        flowing = r.get("flowing_after")
        in_time = flowing is not None and flowing <= 10
        lines.append(
            f"- **{r['run']}**: events flow again within 10 s: {'met' if in_time else 'missed'} "
            f"({'never' if flowing is None else f'{flowing:.1f} s'}); no silent loss: "
            f"{'met' if not r['lost_silently'] else 'missed'} "
            f"({r['lost_silently']:,} events lost without a `gap`"
            + (
                f", counting those {r['clients_without_last']:,} clients still catching up "
                "at the end had not yet received"
                if "behind" not in r and r.get("clients_without_last")
                else ""
            )
            + ")."
        )
        if not in_time:
            lines.append(f"  {LIMITS['failover']}")
        if r["lost_silently"]:
            lines.append(f"  {LIMITS['failover-loss']}")
    r = by_run.get("sigstop")
    if r is not None:
        met = r["lost_silently"] == 0
        lines.append(
            f"- **sigstop**: every event or `lagged`/`gap` after SIGCONT: "
            f"{'met' if met else 'missed'} ({r['delivered'] / r['expected']:.3%} delivered, "
            f"{r['lagged']} lagged, {r['gaps']} gap, {r['lost_silently']} lost silently); "
            f"the other server's clients unaffected: their slowest live event took "
            f"{r['others_worst'] * 1000:,.0f} ms ({r['clients_stalled']} of {r['clients']} "
            "clients were on the stopped server)."
        )
    if cap is not None:
        best: dict[str, dict[str, Any] | None] = {}
        for server in dict.fromkeys(row["server"] for row in cap["rows"]):
            passed = [r for r in cap["rows"] if r["server"] == server and r["passed"]]
            top = max(passed, key=lambda r: r["clients"], default=None)
            best[server] = top
        daphne = best.get("daphne")
        reached = daphne["clients"] if daphne else 0
        others = ", ".join(
            f"{server} {row['clients']:,} ({row['kb_per_connection']:.0f} KB per connection)"
            if row
            else f"{server} none"
            for server, row in best.items()
        )
        lines.append(
            f"- **capacity**: 10,000 websockets per daphne at 1 event/s: "
            f"{'met' if reached >= 10000 else 'missed'} (largest step passed: {others})."
        )
        if reached < 10000:
            lines.append(f"  {LIMITS['capacity']}")
    return lines


def write_page(runs: list[dict[str, Any]], cap: dict[str, Any] | None, load: str) -> None:
    parts = [
        "# Scale: many daphnes, faults and capacity",
        "",
        "Written by `bench/scale.py` from the figures of `bench/faults.py` and "
        "`bench/capacity.py` in `docs/performance/scale/`. The topology "
        "(`bench/topology.py`): HAProxy (leastconn, a TCP check every 500 ms) over "
        "two daphne processes of the demo, on Redis with Sentinel (a master, a "
        "replica, three sentinels) through channels_redis' Sentinel hosts, all on "
        "loopback. Clients (`bench/loadclient.py`, in four processes) resume with "
        "`since` after every reconnect, as the JS client does; a publisher process "
        "calls `dispatch()`.",
        "",
        '!!! note "Indicative figures"',
        "    Measured on a two-core machine shared with other work while the runs "
        f"went on (1-minute load average {load} at the ends of the runs); the servers, "
        "Redis, HAProxy, the publisher and the clients all ran on those two "
        "cores. Read ratios and shapes, not absolute figures.",
        "",
        "To measure again and rewrite this page:",
        "",
        "```sh",
        ".venv/bin/python bench/scale.py --runs churn,rolling,sigkill,failover,sigstop --capacity",
        "```",
        "",
        "## Targets",
        "",
        *verdicts(runs, cap),
        "",
    ]
    if runs:
        parts += [
            "## Fault runs",
            "",
            "Every client expects every event: delivered / expected counts each event "
            "once per client; *lost silently* is what clients without a `gap` never got "
            "though they got the last event (clients still catching up when the wait for "
            "stragglers ended are named under each run). "
            "Live latency is publish to receipt of events not replayed; replay latency "
            "runs from a resumed `subscribe` to the last event it replayed.",
            "",
            faults.table(runs),
            "",
        ]
        for r in runs:
            png = f"scale-{r['run'].replace(' + ', '-')}-{r['clients']}.png"
            plot_run(r, PAGE.parent / png)
            parts += [
                f"### {r['run']}, {r['clients']:,} clients",
                "",
                f"`{r['command']}`",
                "",
                faults.notes(r) or "- nothing was done to the servers",
                "",
                f"![{r['run']}: delivered share and latency per second]({png})",
                "",
            ]
    if cap is not None:
        plot_capacity(cap, PAGE.parent / "scale-capacity.png")
        parts += [
            "## Capacity",
            "",
            f"`{cap['command']}`",
            "",
            "One server process, clients connected straight to it, one event a second to "
            "every connection. A step passes with every event delivered and p99 at most "
            "1 s. *Client lag p99* is how late a 50 ms timer fired in the client "
            "processes: that much of the latency is the load generator's own. KB per "
            "connection is the server's RSS with every client connected, less its RSS "
            "before the first, divided by the clients.",
            "",
            capacity.table(cap["rows"]),
            "",
            "![capacity: p99 latency and memory per connection](scale-capacity.png)",
            "",
        ]
    PAGE.write_text("\n".join(parts))
    print(f"[scale] wrote {PAGE.relative_to(ROOT)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="", help="fault runs, comma-separated")
    parser.add_argument("--capacity", action="store_true")
    parser.add_argument("--steps", default=",".join(map(str, capacity.STEPS)))
    parser.add_argument("--clients", type=int, help="scale the fault runs down")
    parser.add_argument("--seconds", type=float, help="scale the fault runs down")
    parser.add_argument("--straggle", type=float, default=60.0, help="see bench/faults.py")
    parser.add_argument("--capacity-seconds", type=int, default=20)
    parser.add_argument("--page-only", action="store_true")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    if not args.page_only:
        if args.runs:
            run_faults(args)
        if args.capacity:
            DATA.mkdir(parents=True, exist_ok=True)
            steps = ["--steps", args.steps, "--seconds", str(args.capacity_seconds)]
            capacity.main([*steps, "--json", str(DATA / "capacity.json")])
    runs, cap = load_results()
    loads = [r["loadavg"] for r in runs if "loadavg" in r]
    loads += [row["loadavg"] for row in (cap or {}).get("rows", []) if "loadavg" in row]
    load = f"{min(loads):.1f} to {max(loads):.1f}" if loads else "unknown"
    write_page(runs, cap, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
