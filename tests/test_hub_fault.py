"""The hub across a Redis outage: a throwaway redis-server is killed and restarted.

A receiver process and a sender process (``tests/hubproc.py``) keep running
through the outage; the test checks that events flow again soon after Redis
is back, without restarting either process, and reports how many were lost.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.hubproc import HubProcess, Record, hub_env

REDIS_SERVER_ENV = "CHANNELS_EVENTS_REDIS_SERVER"
TICKS = 600  # one every 20 ms: about 12 s of traffic
INTERVAL = 0.02
BEFORE_KILL = 3.0
OUTAGE = 2.0
RECOVERY = 5.0


def redis_server_binary() -> str:
    """Return the redis-server to run; skip (fail under CI=true) when there is none."""
    configured = os.environ.get(REDIS_SERVER_ENV)
    path = configured or shutil.which("redis-server")
    if path and os.path.isfile(path) and os.access(path, os.X_OK):
        return path
    if configured:
        reason = f"{REDIS_SERVER_ENV}={configured!r} is not an executable file"
    else:
        reason = f"redis-server not found: set {REDIS_SERVER_ENV} or put redis-server on PATH"
    if os.environ.get("CI", "").strip().lower() == "true":
        pytest.fail(f"CI=true but {reason}: the outage test must run in CI")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class RedisServer:
    """A redis-server without persistence on a fixed port, that can be killed and restarted."""

    def __init__(self, binary: str, port: int, workdir: Path) -> None:
        self.binary = binary
        self.port = port
        self.workdir = workdir
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> float:
        """Start the server and return the time at which it answers PING."""
        assert self.proc is None or self.proc.poll() is not None
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            while True:
                try:
                    if client.ping():
                        return time.time()
                except redis.ConnectionError:
                    pass
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"redis-server on port {self.port} did not come up "
                        f"(exit code {self.proc.poll()})"
                    )
                time.sleep(0.05)
        finally:
            client.close()

    def kill(self) -> float:
        """Kill the server abruptly (SIGKILL) and return when it was gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        return time.time()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(redis_server_binary(), free_port(), tmp_path)
    try:
        yield server
    finally:
        server.kill()


def numbers(records: list[Record]) -> list[int]:
    return [int(record["payload"]["n"]) for record in records]


@pytest.mark.redis
@pytest.mark.parametrize("layer", ["core", "pubsub"])
def test_events_flow_again_after_redis_restarts(
    layer: str,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    record_testsuite_property: Callable[[str, object], None],
) -> None:
    redis_server.start()
    env = hub_env(redis_server.url, f"cefault-{layer}", layer)
    children: list[HubProcess] = []
    try:
        b = HubProcess(
            "B",
            "listen",
            ["--pattern", "fault::.*", "--stop-on-last", "--timeout", "60"],
            env,
        )
        children.append(b)
        b.wait_for("ready", 30)
        a = HubProcess(
            "A",
            "send",
            [
                "--name",
                "fault::tick",
                "--count",
                str(TICKS),
                "--numbered",
                "--interval",
                str(INTERVAL),
                "--count-sends",
            ],
            env,
        )
        children.append(a)
        b.wait_until(lambda records: b.events, 30, "a first event at B")
        time.sleep(BEFORE_KILL)

        killed_at = redis_server.kill()
        time.sleep(OUTAGE)
        restarted_at = redis_server.start()

        def after_restart(_records: list[Record]) -> Record | None:
            return next((r for r in b.events if r["at"] > restarted_at), None)

        remaining = RECOVERY - (time.time() - restarted_at)
        first_after = b.wait_until(
            after_restart, max(0.0, remaining), f"an event at B within {RECOVERY}s of the restart"
        )
        recovery = first_after["at"] - restarted_at
        assert recovery <= RECOVERY, (recovery, b.describe())

        assert a.wait_exit(60) == 0, a.describe()
        b.wait_for("done", 30)
        assert b.wait_exit(30) == 0, b.describe()
    finally:
        for child in children:
            child.kill()
        redis_server.kill()

    received = numbers(b.events)
    unique = set(received)
    lost = sorted(set(range(TICKS)) - unique)
    duplicates = len(received) - len(unique)
    before = [r for r in b.events if r["at"] < killed_at]
    after = [r for r in b.events if r["at"] > restarted_at]
    sent_line = a.wait_for("sent", 0)
    summary = (
        f"[{layer}] outage {restarted_at - killed_at:.1f}s: {len(lost)} of {TICKS} events lost"
        f"{f' (n={lost[0]}..{lost[-1]})' if lost else ''}, {duplicates} duplicate(s); "
        f"B got {len(before)} before the kill and {len(after)} after the restart, "
        f"the first {recovery:.2f}s after it; A dispatched for {sent_line['elapsed']:.1f}s "
        f"and handed {a.wait_for('exit', 0)['sends']['messages']} message(s) to the layer"
    )
    record_testsuite_property(f"hub.outage.{layer}.events_lost", len(lost))
    record_testsuite_property(f"hub.outage.{layer}.duplicates", duplicates)
    record_testsuite_property(f"hub.outage.{layer}.recovery_seconds", round(recovery, 3))
    with capsys.disabled():
        print(f"\n{summary}")

    assert before, "B received nothing before the outage"
    assert after[-1]["payload"]["last"], "B did not receive the last event"
    assert numbers(after) == sorted(numbers(after)), "events after the restart out of order"
