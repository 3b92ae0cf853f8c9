"""A seeded protocol fuzz run against a real daphne on Redis (``bench/fuzz.py``, smaller).

The full run, of 20,000 frames, is ``python bench/fuzz.py --frames 20000``
(docs/development.md).
"""

from __future__ import annotations

import asyncio

import pytest

from bench.fuzz import fuzz, tracebacks
from tests.test_e2e import Cluster, cluster  # noqa: F401 - the fixture

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


async def test_hostile_frames_leave_no_traceback_and_every_subscription_working(
    cluster: Cluster,  # noqa: F811
) -> None:
    (daphne,) = await cluster.start("fuzzed")
    report = await fuzz(
        daphne.url(), daphne.origin, frames=1500, connections=20, seed=20261130, checks=10
    )
    # daphne logs what an application raised when it next looks, within a second.
    await asyncio.sleep(1.5)
    assert report["frames"] == 1500
    assert report["surviving"] == 20, report
    assert report["keep_missing"] == {}, report
    assert report["control_missing"] == 0 and report["control_lagged"] == [], report
    assert report["ok"], report
    # The run did reach the server's refusals, not only its happy path.
    answers = report["answers"]
    for code in ("bad_json", "bad_request", "too_large", "invalid_pattern"):
        assert answers.get(f"error:{code}"), (code, answers)
    assert answers.get("emitted") and answers.get("event"), answers
    assert tracebacks(daphne.log) == [], daphne.describe()
