"""Draw the main figure of each benchmark on a bench/compare.py page, before against after.

Run from the repository root:

    .venv/bin/python bench/plot.py [docs/performance/rebuild.md ...]

With no page named, every page in ``docs/performance/`` but ``index.md`` is
read. Each page holds one section per benchmark (``## `bench/<name>.py ...` ``)
with a ``### Before: <commit>`` and a ``### After: <commit>`` run, as
``bench/compare.py`` wrote them. For each section the script reads one table
of both runs and writes a bar chart, ``<page>-<bench>.png`` beside the page:

- ``dispatch``: nanoseconds per ``dispatch()`` for each number of patterns;
- ``observers``: ``save()`` time with each set-up, relative to no observer;
- ``crossprocess``: CPU per event in the sender and the receiver, per path;
- ``fanout``: daphne's CPU per delivery relative to the floor, per load and server.

The figures come from the page as written: nothing is measured again.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "docs" / "performance"

_SECTION = re.compile(r"^## `bench/(?P<name>[a-z_]+)\.py(?P<args>[^`]*)`\s*$", re.MULTILINE)
_RUN = re.compile(r"^### (?P<which>Before|After): (?P<commit>\S+).*$", re.MULTILINE)
_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")

Table = list[list[str]]


@dataclass(frozen=True)
class Figure:
    """Which table of a benchmark's output to draw, and how."""

    #: A column only the wanted table has.
    marker: str
    #: Columns whose cells, joined, label a bar.
    labels: tuple[str, ...]
    #: Columns to draw, one panel each; ``"save() +1"`` is the column after ``save()``.
    values: tuple[str, ...]
    title: str
    unit: str


FIGURES = {
    "dispatch": Figure(
        "patterns", ("patterns",), ("channels-events",), "dispatch() per pattern count", "ns"
    ),
    "observers": Figure(
        "vs plain", ("setup",), ("save() +1",), "save() relative to no observer", "x plain"
    ),
    "crossprocess": Figure(
        "sender A",
        ("layer", "path"),
        ("sender A", "receiver B"),
        "CPU per event sent, per path",
        "us",
    ),
    "fanout": Figure(
        "CPU vs floor",
        ("load", "server"),
        ("CPU vs floor",),
        "daphne CPU per delivery relative to the floor",
        "x floor",
    ),
}


def tables(text: str) -> list[Table]:
    """Return the markdown tables in ``text``: each a header row then body rows of cells."""
    found: list[Table] = []
    current: Table = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", cell) for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def number(cell: str) -> float | None:
    """Return the first number in a cell (``1,137 ns``, ``1.14x``), or None if it has none."""
    match = _NUMBER.search(cell)
    return float(match.group().replace(",", "")) if match else None


def column(header: list[str], name: str) -> int:
    """Return the index of column ``name``; ``"save() +1"`` names the column after ``save()``."""
    base, _, offset = name.partition(" +")
    return header.index(base) + int(offset or 0)


def series(run: str, figure: Figure) -> dict[str, dict[str, float]] | None:
    """Return {value column: {bar label: value}} from a run's output, or None without the table."""
    for table in tables(run):
        header = table[0]
        if figure.marker not in header:
            continue
        labels = [column(header, name) for name in figure.labels]
        found: dict[str, dict[str, float]] = {}
        for name in figure.values:
            index = column(header, name)
            values = found.setdefault(name, {})
            for row in table[1:]:
                value = number(row[index])
                if value is not None:
                    values[" / ".join(row[i] for i in labels)] = value
        return found
    return None


def sections(page: str) -> list[tuple[str, str, dict[str, tuple[str, str]]]]:
    """Return (bench name, its arguments, {"Before"/"After": (commit, output)}) per section."""
    starts = list(_SECTION.finditer(page))
    found = []
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(page)
        body = page[start.end() : end]
        runs = list(_RUN.finditer(body))
        outputs = {}
        for j, run in enumerate(runs):
            stop = runs[j + 1].start() if j + 1 < len(runs) else len(body)
            outputs[run["which"]] = (run["commit"], body[run.end() : stop])
        found.append((start["name"], start["args"].strip(), outputs))
    return found


def slug(name: str, args: str) -> str:
    """Return the file-name part for a benchmark run with ``args``: ``fanout-layer-core``."""
    words = re.findall(r"[A-Za-z0-9]+", args)
    return "-".join([name, *words])


def draw(
    path: Path,
    figure: Figure,
    command: str,
    runs: dict[str, tuple[str, dict[str, dict[str, float]]]],
) -> None:
    """Write one PNG: a panel per value column, a pair of bars (before, after) per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(
        dict.fromkeys(label for _, data in runs.values() for label in data[figure.values[0]])
    )
    height = 0.4
    fig, axes = plt.subplots(
        1,
        len(figure.values),
        figsize=(6 * len(figure.values) + 2, 0.5 * len(labels) + 1.8),
        sharey=True,
        squeeze=False,
    )
    for ax, name in zip(axes[0], figure.values, strict=True):
        for k, (which, (commit, data)) in enumerate(runs.items()):
            positions = [i + (k - 0.5) * height for i in range(len(labels))]
            values = [data[name].get(label, 0.0) for label in labels]
            ax.barh(positions, values, height, label=f"{which}: {commit}")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_xlabel(f"{name.partition(' +')[0]} ({figure.unit})")
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].invert_yaxis()  # the panels share it: once puts the first row on top
    # Above the panels, where no bar can hide under it.
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="upper right", ncols=2)
    fig.suptitle(f"{command}: {figure.title}", x=0.02, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_page(page: Path) -> list[Path]:
    """Write the charts of one page beside it; return the files written."""
    written = []
    for name, args, outputs in sections(page.read_text()):
        figure = FIGURES.get(name)
        if figure is None or set(outputs) != {"Before", "After"}:
            continue
        runs = {}
        for which in ("Before", "After"):
            commit, output = outputs[which]
            data = series(output, figure)
            if data is None:  # the run failed, or printed no such table
                break
            runs[which] = (commit, data)
        else:
            path = page.with_name(f"{page.stem}-{slug(name, args)}.png")
            command = f"bench/{name}.py {args}".strip()
            draw(path, figure, command, runs)
            written.append(path)
            continue
        print(f"[plot] {page.name}: no {name} table in both runs, skipped", flush=True)
    return written


def main() -> None:
    """Parse the command line and write the charts of each page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pages", nargs="*", type=Path, help="pages written by bench/compare.py")
    args = parser.parse_args()
    pages = args.pages or sorted(p for p in PAGES.glob("*.md") if p.name != "index.md")
    for page in pages:
        for path in plot_page(page):
            print(f"[plot] wrote {path}", flush=True)


if __name__ == "__main__":
    main()
