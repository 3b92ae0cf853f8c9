"""bench/plot.py draws a chart per benchmark of a bench/compare.py page, beside the page."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from tests.conftest import missing_tool

ROOT = Path(__file__).resolve().parent.parent

PAGE = """# Benchmarks: 1111111 against 2222222

Written by `bench/compare.py --base 1111111`.

## `bench/dispatch.py`

### Before: 1111111

| patterns | channels-events | linear scan | Signal.send (1 receiver) | speed-up |
| ---: | ---: | ---: | ---: | ---: |
| 1 | 643 ns | 426 ns | 1,773 ns | 0.7x |
| 1000 | 773 ns | 104,197 ns | 1,773 ns | 134.8x |

### After: 2222222

| patterns | channels-events | linear scan | Signal.send (1 receiver) | speed-up |
| ---: | ---: | ---: | ---: | ---: |
| 1 | 1,137 ns | 561 ns | 2,580 ns | 0.5x |
| 1000 | 1,670 ns | 140,504 ns | 2,580 ns | 84.1x |

## `bench/fanout.py --layer core`

### Before: 1111111

| load | server | delivered | p50 | p99 | daphne CPU per delivery | CPU vs floor | p99 vs floor |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
| 100 clients x 50/s | channels_events | 100.00% | 9.8 ms | 16.2 ms | 51.6 µs | 1.04x | 1.15x |
| 100 clients x 50/s | floor | 100.00% | 9.0 ms | 14.1 ms | 49.6 µs | 1.00x | 1.00x |

### After: 2222222

| load | server | delivered | p50 | p99 | daphne CPU per delivery | CPU vs floor | p99 vs floor |
| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |
| 100 clients x 50/s | channels_events | 100.00% | 9.7 ms | 13.4 ms | 49.4 µs | 1.18x | 1.09x |
| 100 clients x 50/s | floor | 100.00% | 7.6 ms | 12.3 ms | 42.0 µs | 1.00x | 1.00x |

## `bench/observers.py`

### Before: 1111111

(exit status 1)

### After: 2222222

(exit status 1)
"""


def test_plot_writes_a_png_per_benchmark_with_figures_beside_the_page(tmp_path: Path) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        missing_tool("matplotlib is not installed (pip install -e '.[dev]' brings it)")
    page = tmp_path / "sample.md"
    page.write_text(PAGE)
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "plot.py"), str(page)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    written = sorted(path.name for path in tmp_path.glob("*.png"))
    # The observers runs failed and printed no table: no chart, and a word about it.
    assert written == ["sample-dispatch.png", "sample-fanout-layer-core.png"], done.stdout
    assert "no observers table" in done.stdout
    for name in written:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
