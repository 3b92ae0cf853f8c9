"""Run benchmarks on an earlier commit and on this checkout, side by side, into one page.

Run from the repository root:

    .venv/bin/python bench/compare.py --base 9ac5b42 [--bench dispatch observers ...]
        [--args fanout="--quick --layer pubsub"] [--out docs/performance/compare.md]
    .venv/bin/python bench/compare.py --bench presence --out docs/performance/presence.md

For each benchmark in turn, the script runs ``bench/<name>.py`` in a
temporary checkout of ``--base`` (``git worktree``), then in this checkout,
with the same interpreter, one right after the other so that both see the
same machine; each run's output (its markdown tables) goes into the page
unchanged, under the commit it measured. The temporary checkout is removed
at the end. Without ``--base``, only this checkout runs: for benchmarks of
features that have nothing before them, and runs with arguments an earlier
commit's benchmarks do not take. Compare figures within one page only: the machine is shared, and
a figure from another day says little.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ["dispatch", "observers", "crossprocess", "fanout"]
# Benchmarks of features with nothing before them: run with no --base.
NEW_BENCHES = ["presence"]


def git(*args: str, cwd: Path = ROOT) -> str:
    """Run git and return its output."""
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def run_bench(tree: Path, name: str, extra: list[str]) -> str:
    """Run one benchmark in ``tree`` and return what it printed."""
    command = [sys.executable, str(tree / "bench" / f"{name}.py"), *extra]
    print(f"[compare] {tree}: {shlex.join(command[1:])}", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(tree)
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    output = done.stdout.strip()
    if done.returncode != 0:
        output += f"\n\n(exit status {done.returncode})\n\n```\n{done.stderr.strip()[-3000:]}\n```"
    return output


def main() -> None:
    """Parse the command line, run the benchmarks both ways and write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base", help="the commit to compare with; without it, only this checkout runs"
    )
    parser.add_argument("--bench", nargs="+", choices=BENCHES + NEW_BENCHES, default=BENCHES)
    parser.add_argument(
        "--args",
        action="append",
        default=[],
        metavar='NAME="ARGS"',
        help='extra arguments for one benchmark, e.g. fanout="--quick" (repeatable)',
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance" / "compare.md")
    args = parser.parse_args()
    extra: dict[str, list[str]] = {}
    for item in args.args:
        name, _, text = item.partition("=")
        extra[name] = shlex.split(text)

    head = git("rev-parse", "--short", "HEAD")
    dirty = (
        " (with uncommitted changes)"
        if git("status", "--porcelain", "--untracked-files=no")
        else ""
    )
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    sections: list[str] = []
    if args.base is None:
        for name in args.bench:
            output = run_bench(ROOT, name, extra.get(name, []))
            command = shlex.join([f"bench/{name}.py", *extra.get(name, [])])
            sections.append(f"## `{command}`\n\n{output}\n")
        header = (
            f"# Benchmarks of {head}{dirty}\n\n"
            f"Written by `bench/compare.py` on {when}, {machine}. Each benchmark runs "
            "its alternatives side by side in one run; compare within a table, not "
            "with figures from other pages.\n"
        )
    else:
        base = git("rev-parse", "--short", args.base)
        with tempfile.TemporaryDirectory(prefix="channels-events-base-") as tmp:
            tree = Path(tmp) / "base"
            git("worktree", "add", "--detach", str(tree), base)
            try:
                for name in args.bench:
                    before = run_bench(tree, name, extra.get(name, []))
                    after = run_bench(ROOT, name, extra.get(name, []))
                    command = shlex.join([f"bench/{name}.py", *extra.get(name, [])])
                    sections.append(
                        f"## `{command}`\n\n### Before: {base}\n\n{before}\n\n"
                        f"### After: {head}{dirty}\n\n{after}\n"
                    )
            finally:
                git("worktree", "remove", "--force", str(tree))
        header = (
            f"# Benchmarks: {base} against {head}\n\n"
            f"Written by `bench/compare.py --base {base}` on {when}, {machine}. Each "
            f"benchmark ran on {base} and then on {head}, one right after the other, on "
            "the same machine; compare the two runs of a table, not figures from other "
            "pages.\n"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + "\n" + "\n".join(sections))
    print(f"[compare] wrote {args.out}", flush=True)


if __name__ == "__main__":
    main()
