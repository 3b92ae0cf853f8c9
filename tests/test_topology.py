"""Several daphnes behind HAProxy on Redis with Sentinel: churn and a rolling restart lose nothing.

CI-sized versions of ``bench/faults.py churn`` and ``bench/faults.py
rolling``: two daphnes of the demo behind HAProxy, a Redis master, its
replica and three sentinels (``bench/topology.py``), 100 clients that resume
with ``since`` after every reconnect as the JS client does, a publisher
process dispatching through the library. Every client must get every event,
once, in order, and no ``gap``. HAProxy, redis-server and redis-sentinel
are Debian's packages: ``scripts/dev.py test`` installs them under CI=true;
elsewhere a missing one skips these tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench import faults
from bench.topology import PACKAGES, find_program
from tests.conftest import missing_tool

pytestmark = [pytest.mark.redis, pytest.mark.timeout(300)]

CLIENTS = 100
SECONDS = 20


@pytest.fixture(autouse=True)
def programs() -> None:
    missing = [name for name in PACKAGES if find_program(name) is None]
    if missing:
        packages = " ".join(sorted({PACKAGES[name] for name in missing}))
        missing_tool(f"{', '.join(missing)} not found (install Debian's {packages})")


def fault_run(run: str, rate: int) -> dict[str, Any]:
    argv = [run, "--clients", str(CLIENTS), "--seconds", str(SECONDS), "--rate", str(rate)]
    return faults.run([*argv, "--processes", "2", "--straggle", "30"])


def assert_every_event_once_in_order(result: dict[str, Any]) -> None:
    figures = {key: result[key] for key in ("delivered", "expected", "duplicates")}
    # Why a server answered gap, if one did: a history read that timed out...
    figures["gap_reasons"] = result["gap_reasons"]
    for key in ("out_of_order", "gaps", "lagged", "clients_short", "clients_without_last"):
        figures[key] = result[key]
    assert result["clients"] == CLIENTS, figures
    assert result["published"]["flushed"], result["published"]
    assert result["delivered"] == result["expected"], figures
    assert result["duplicates"] == 0, figures
    assert result["out_of_order"] == 0, figures
    assert result["gaps"] == 0, figures
    assert result["lagged"] == 0, figures


def test_churn_loses_nothing() -> None:
    result = fault_run("churn", rate=20)
    # The clients were cut and came back: the run tested what it is about.
    assert result["reconnects"] >= CLIENTS, result["reconnects"]
    assert result["replays"] > 0
    assert_every_event_once_in_order(result)


def test_rolling_restart_loses_nothing() -> None:
    result = fault_run("rolling", rate=20)
    done = [what for _, what in result["marks"]]
    assert done == [
        "SIGTERM daphne0",
        "daphne0 answers again",
        "SIGTERM daphne1",
        "daphne1 answers again",
    ]
    # Every client was on a daphne that went away, and came back through HAProxy.
    assert result["reconnects"] >= CLIENTS, result["reconnects"]
    assert_every_event_once_in_order(result)
