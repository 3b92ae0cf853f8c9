"""``manage.py events``: listen, emit, list and check."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from channels_events import Dispatcher, get_dispatcher
from channels_events.testing import capture_events
from tests.hubproc import hub_env

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, "manage.py", "events"]


def run(*args: str) -> str:
    out = StringIO()
    call_command("events", *args, stdout=out)
    return out.getvalue()


def test_emit_dispatches_the_event_and_prints_its_id() -> None:
    with (
        capture_events("cmd::.*") as events,
        override_settings(CHANNELS_EVENTS={"CHANNEL_LAYER": None}),
    ):
        output = run("emit", "cmd::thing::done", "--payload", '{"n": 1}')
    [event] = events
    assert event.payload == {"n": 1}
    assert output.strip() == event.id


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["emit", "bad name"], "may only contain"),
        (["emit", "cmd::x", "--payload", "{nope"], "not valid JSON"),
        (["emit", "cmd::x", "--payload", "[1, 2]"], "must be a JSON object"),
    ],
)
def test_emit_refuses_bad_input_and_dispatches_nothing(args: list[str], message: str) -> None:
    with capture_events() as events, pytest.raises(CommandError, match=message):
        run(*args)
    assert events == []


def test_list_shows_listeners_and_namespaces() -> None:
    def on_paid(event: object) -> None: ...

    get_dispatcher().connect(on_paid, r"billing::invoice::.*", priority=5, once=True)
    try:
        output = run("list")
    finally:
        get_dispatcher().disconnect(on_paid)
    assert "billing::invoice::.*" in output
    assert "on_paid" in output
    assert "priority=5" in output and "once" in output
    assert "Namespaces joined by the hub: billing" in output


def test_check_reports_settings_and_a_reachable_layer() -> None:
    output = run("check")
    assert "CHANNELS_EVENTS:" in output
    assert "GROUP_PREFIX = 'events'" in output
    assert "InMemoryChannelLayer answers" in output


def test_check_fails_on_invalid_settings() -> None:
    with (
        override_settings(CHANNELS_EVENTS={"BATCH_SIZE": 0}),
        pytest.raises(CommandError, match="has errors"),
    ):
        run("check")


def test_check_shows_warnings_with_their_hints_and_passes() -> None:
    with override_settings(CHANNEL_EVENTS={"DEBUG": True}):
        output = run("check")
    assert "channels_events.W001: settings.CHANNEL_EVENTS is not read" in output
    assert "HINT: Move its keys into CHANNELS_EVENTS and delete CHANNEL_EVENTS." in output
    assert "channels_events.I001" in output
    assert "InMemoryChannelLayer answers" in output


@pytest.mark.parametrize(
    ("layer", "hosts"),
    [
        ("core", ["redis://:s3cret@127.0.0.1:1/0"]),
        ("pubsub", [("127.0.0.1", 1)]),
    ],
)
def test_check_names_host_and_port_of_an_unreachable_layer(layer: str, hosts: list[Any]) -> None:
    backend = {
        "core": "channels_redis.core.RedisChannelLayer",
        "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
    }[layer]
    layers = {"default": {"BACKEND": backend, "CONFIG": {"hosts": hosts}}}
    with (
        override_settings(CHANNEL_LAYERS=layers),
        pytest.raises(CommandError, match="not reachable") as info,
    ):
        run("check")
    message = str(info.value)
    assert f"Channel layer 'default' ({backend}) at 127.0.0.1:1 is not reachable" in message
    assert "Start Redis there, or correct CHANNEL_LAYERS['default']['CONFIG']['hosts']." in message
    assert "s3cret" not in message


def test_listen_needs_a_namespace_for_open_patterns() -> None:
    with pytest.raises(CommandError, match="--namespace"):
        run("listen", ".*")
    with pytest.raises(CommandError, match="does not compile"):
        run("listen", "shop::(")


def test_listen_does_not_run_the_projects_listeners() -> None:
    # The command uses its own dispatcher: nothing is added to the default one.
    before = get_dispatcher().registrations
    with (
        override_settings(CHANNELS_EVENTS={"CHANNEL_LAYER": None}),
        pytest.raises(CommandError, match="No channel layer"),
    ):
        run("listen", "shop::.*")
    assert get_dispatcher().registrations == before
    assert isinstance(Dispatcher(), Dispatcher)


@pytest.mark.redis
def test_listen_prints_events_from_another_process(redis_url: str, redis_prefix: str) -> None:
    env = hub_env(redis_url, redis_prefix)
    listener = subprocess.Popen(
        [*MANAGE, "listen", "cmd::.*", "--count", "2", "--timeout", "30"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The listener joins its group within a moment; emit until it has both.
        deadline = time.monotonic() + 25
        sent = 0
        while listener.poll() is None and time.monotonic() < deadline:
            subprocess.run(
                [*MANAGE, "emit", f"cmd::tick::{sent}", "--payload", json.dumps({"n": sent})],
                cwd=ROOT,
                env=env,
                check=True,
                capture_output=True,
            )
            sent += 1
            time.sleep(0.3)
        out, err = listener.communicate(timeout=10)
    finally:
        listener.kill()
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len(lines) == 2, (out, err)
    for line in lines:
        assert set(line) == {"id", "name", "namespace", "payload", "timestamp"}
        assert line["name"] == f"cmd::tick::{line['payload']['n']}"
        assert line["namespace"] == "cmd"
    assert lines[0]["payload"]["n"] < lines[1]["payload"]["n"]
