"""The demo project: its checks, shop_simulate, and what scripts/dev.py installs for it."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from demo.layer import shown_url

ROOT = Path(__file__).resolve().parent.parent


def demo_settings(tmp_path: Path, **extra: str) -> dict[str, str]:
    """Return the environment of the demo's processes, with its database migrated."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
        "PYTHONPATH": str(ROOT),
    }
    for name in ("REDIS_URL", "REDIS_PREFIX", "DEMO_CHANNEL_LAYER"):
        env.pop(name, None)
    env.update(extra)
    manage(env, "migrate", "--noinput")
    return env


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    return demo_settings(tmp_path, DEMO_CHANNEL_LAYER="memory")


def run_manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def manage(env: dict[str, str], *args: str) -> str:
    result = run_manage(env, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def check(env: dict[str, str]) -> str:
    """Run manage.py check; return what it says (on stderr when there are issues)."""
    result = run_manage(env, "check", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def order_count(env: dict[str, str]) -> int:
    out = manage(
        env, "shell", "-c", "from demo.shop.models import Order; print(Order.objects.count())"
    )
    return int(out.strip().splitlines()[-1])


def dashboard(env: dict[str, str]) -> str:
    """Return the dashboard page's HTML, as the demo's settings render it."""
    return manage(
        env,
        "shell",
        "-c",
        "from django.test import Client;"
        "print(Client(HTTP_HOST='127.0.0.1').get('/').content.decode())",
    )


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_with_no_redis_the_demo_runs_in_memory_and_says_so(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    env = demo_settings(tmp_path, REDIS_URL=url)
    # No warning or error; one info, and a true one: the layer is the in-memory one.
    said = check(env)
    assert "(channels_events.I001)" in said
    assert "System check identified 1 issue (0 silenced)." in said
    page = dashboard(env)
    assert "channel layer: in-memory" in page
    assert 'id="layer-warning"' in page
    assert "Other processes cannot be heard." in page
    assert f"no Redis answered at {url}" in page  # why
    assert f"Start Redis at {url}" in page  # and the fix
    assert "changes made by other processes do not" in page
    assert "or by any other process" not in page


@pytest.mark.redis
def test_with_redis_answering_the_demo_uses_it(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    env = demo_settings(tmp_path, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    said = check(env)
    assert "System check identified no issues (0 silenced)." in said
    assert "I001" not in said
    page = dashboard(env)
    assert f"channel layer: {shown_url(redis_url)}" in page
    assert "RedisPubSubChannelLayer" in page
    assert "layer-warning" not in page
    assert "made here or by any other process on the same Redis" in page


def test_demo_channel_layer_memory_keeps_the_demo_in_memory(demo_env: dict[str, str]) -> None:
    page = dashboard(demo_env)
    assert "channel layer: in-memory" in page
    assert "DEMO_CHANNEL_LAYER=memory" in page


def test_demo_channel_layer_refuses_a_value_it_does_not_know(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "DEMO_CHANNEL_LAYER": "redsi",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "DEMO_CHANNEL_LAYER must be one of auto, redis, memory, got 'redsi'." in result.stderr


def test_the_page_shows_redis_urls_without_their_password() -> None:
    assert shown_url("redis://:s3cret@cache.internal:6380/2") == "redis://cache.internal:6380/2"
    assert shown_url("rediss://user:pw@[::1]:6379/0") == "rediss://[::1]:6379/0"
    assert shown_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_shop_simulate_creates_advances_and_deletes_orders(demo_env: dict[str, str]) -> None:
    out = manage(
        demo_env,
        *("shop_simulate", "--rate", "1000", "--count", "60", "--seed", "7", "--allow-in-memory"),
    )
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


def test_shop_simulate_refuses_the_in_memory_layer_and_says_the_fix(
    demo_env: dict[str, str],
) -> None:
    refused = run_manage(demo_env, "shop_simulate", "--rate", "1000", "--count", "3")
    assert refused.returncode != 0
    assert (
        "This process is on the in-memory channel layer (DEMO_CHANNEL_LAYER=memory): the events "
        "of the changes it makes would never leave it" in refused.stderr
    )
    assert "Unset DEMO_CHANNEL_LAYER, start Redis at redis://127.0.0.1:6379/0" in refused.stderr
    assert "--allow-in-memory" in refused.stderr
    assert order_count(demo_env) == 0
    # Told to, it makes the change, and still says no server hears it. (With
    # no order yet, the first change always creates one; later ones may
    # delete it again.)
    allowed = run_manage(
        demo_env, "shop_simulate", "--rate", "1000", "--count", "1", "--allow-in-memory"
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "1 change(s) made." in allowed.stdout
    assert "in-memory channel layer" in allowed.stderr
    assert order_count(demo_env) == 1


@pytest.mark.redis
def test_shop_simulate_runs_on_redis_without_being_told(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    env = demo_settings(tmp_path, REDIS_URL=redis_url, REDIS_PREFIX=redis_prefix)
    result = run_manage(env, "shop_simulate", "--rate", "1000", "--count", "3")
    assert result.returncode == 0, result.stderr
    assert "3 change(s) made." in result.stdout
    assert "in-memory" not in result.stderr


def test_shop_simulate_refuses_a_rate_that_is_not_positive(demo_env: dict[str, str]) -> None:
    result = run_manage(demo_env, "shop_simulate", "--rate", "0", "--count", "1")
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
