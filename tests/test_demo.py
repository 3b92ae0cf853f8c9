"""The demo project: its checks pass, and shop_simulate makes realistic changes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
        "PYTHONPATH": str(ROOT),
    }
    env.pop("REDIS_URL", None)
    manage(env, "migrate", "--noinput")
    return env


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_demo_project_passes_djangos_checks(demo_env: dict[str, str]) -> None:
    # No warning or error; one info: the demo's default layer is the in-memory one.
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "(channels_events.I001)" in result.stderr
    assert "System check identified 1 issue (0 silenced)." in result.stderr


def test_shop_simulate_creates_advances_and_deletes_orders(demo_env: dict[str, str]) -> None:
    out = manage(demo_env, "shop_simulate", "--rate", "1000", "--count", "60", "--seed", "7")
    assert "60 change(s) made." in out
    summary = manage(
        demo_env,
        "shell",
        "-c",
        "import json; from demo.shop.models import Order;"
        "print(json.dumps(sorted(set(Order.objects.values_list('status', flat=True)))))",
    )
    statuses = json.loads(summary.strip().splitlines()[-1])
    assert "new" in statuses
    assert len(statuses) >= 2  # some orders moved on


def test_shop_simulate_refuses_a_rate_that_is_not_positive(demo_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "shop_simulate", "--rate", "0", "--count", "1"],
        cwd=ROOT,
        env=demo_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "--rate must be positive" in result.stderr
