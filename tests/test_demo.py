"""The demo project: its checks, shop_simulate, and what scripts/dev.py installs for it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

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


def _dev_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_script", ROOT / "scripts" / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dev_py_installs_the_demo_extra_for_the_demo_and_the_dev_extra_for_tests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev = _dev_script()
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    monkeypatch.setattr(dev, "VENV", venv)
    monkeypatch.setattr(dev, "VENV_PYTHON", venv / "bin" / "python")
    installed: list[str] = []

    def run(name: str, cmd: list[object], **kwargs: object) -> int:
        installed.extend(str(part) for part in cmd if str(part).startswith(".["))
        return 0

    monkeypatch.setattr(dev, "run", run)
    dev.ensure_venv("demo")
    dev.ensure_venv("demo")  # done already
    assert installed == [".[demo]"]
    dev.ensure_venv("dev")  # the demo's install lacks the test toolchain
    assert installed == [".[demo]", ".[dev]"]
    dev.ensure_venv("demo")  # the dev extra has all the demo needs
    dev.ensure_venv("dev")
    assert installed == [".[demo]", ".[dev]"]

    asked: list[str] = []

    def ensure_venv(extra: str) -> None:
        asked.append(extra)
        raise dev.StepFailed("stop here")

    monkeypatch.setattr(dev, "ensure_venv", ensure_venv)
    monkeypatch.setattr(dev.signal, "signal", lambda *args: None)  # keep pytest's SIGTERM
    assert dev.main(["demo"]) == 1
    assert dev.main(["test"]) == 1
    assert asked == ["demo", "dev"]


def test_the_dev_extra_has_everything_the_demo_extra_has() -> None:
    # scripts/dev.py demo counts on it: a virtualenv made for the tests serves the demo.
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["demo"]
    assert set(extras["demo"]) <= set(extras["dev"])
