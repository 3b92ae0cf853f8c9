"""This repository's asgi.py under uvicorn with two workers: lifespan works, websockets too.

uvicorn sends ASGI lifespan events, which Django's and Channels' applications
do not handle; HubMiddleware answers them, so uvicorn never reports lifespan
as unsupported, and each worker's hub starts at start-up and stops at
shut-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect

from tests.conftest import missing_tool

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
START_TIMEOUT = 40.0
STOP_TIMEOUT = 20.0
STARTED = "Application startup complete."
STOPPED = "Application shutdown complete."


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_log(log: Path, done: Callable[[str], bool], timeout: float, what: str) -> str:
    """Poll the server's log until ``done(text)``; fail with the log after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        text = log.read_text(errors="replace")
        if done(text):
            return text
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s; the server's log:\n{text}")
        time.sleep(0.1)


async def first_frames(port: int, connections: int) -> list[dict[str, Any]]:
    """Open ``connections`` websockets one after another; return the first frame of each."""
    frames = []
    url = f"ws://127.0.0.1:{port}/ws/events/"
    origin = f"http://127.0.0.1:{port}"
    for _ in range(connections):
        async with connect(url, origin=origin, open_timeout=10) as ws:  # type: ignore[arg-type]
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
    return frames


def serve_demo(
    tmp_path: Path, module: str, listen: Callable[[int], list[str]], started: str
) -> str:
    """Run asgi.py under ``python -m <module>`` with WORKERS workers, and stop it; return its log.

    ``listen(port)`` gives the server's arguments for a free loopback port;
    ``started`` is the line each worker logs once it serves. In between,
    ``2 * WORKERS`` websockets, one after another, must each get ``welcome``. The server
    must exit with 0 after SIGTERM.
    """
    if importlib.util.find_spec(module) is None:
        missing_tool(f"{module} is not installed (pip install -e '.[dev]' brings it)")
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DEMO_DB_PATH": str(tmp_path / "demo.sqlite3"),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
        # Not Redis, even where one answers: the demo would take it by itself.
        "DEMO_CHANNEL_LAYER": "memory",
    }
    env.pop("REDIS_URL", None)
    log = tmp_path / f"{module}.log"
    command = [sys.executable, "-m", module, "asgi:application", *listen(port)]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*command, "--workers", str(WORKERS)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_log(
            log, lambda text: text.count(started) == WORKERS, START_TIMEOUT, "both workers' start"
        )
        frames = asyncio.run(first_frames(port, 2 * WORKERS))
        assert [frame["type"] for frame in frames] == ["welcome"] * 2 * WORKERS, frames
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGTERM)
        try:
            server.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                server.kill()
            server.wait()
    text = log.read_text(errors="replace")
    assert server.returncode == 0, text
    return text


def test_asgi_py_under_uvicorn_handles_lifespan_and_welcomes_websockets(tmp_path: Path) -> None:
    text = serve_demo(
        tmp_path, "uvicorn", lambda port: ["--host", "127.0.0.1", "--port", str(port)], STARTED
    )
    # Each worker's lifespan ran to its end, through HubMiddleware's shut-down.
    assert text.count(STOPPED) == WORKERS, text
    assert "unsupported" not in text, text
    assert "Traceback" not in text, text
