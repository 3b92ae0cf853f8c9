"""This repository's asgi.py under hypercorn with two workers: lifespan works, websockets too.

hypercorn sends ASGI lifespan events, which Django's and Channels' applications
do not handle; HubMiddleware answers them, so hypercorn never logs that it
continues "without Lifespan support", and each worker's hub starts at start-up
and stops at shut-down.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import missing_tool
from tests.test_uvicorn import first_frames, free_port, wait_for_log

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
START_TIMEOUT = 40.0
STOP_TIMEOUT = 20.0
STARTED = "Running on http://"


def test_asgi_py_under_hypercorn_handles_lifespan_and_welcomes_websockets(
    tmp_path: Path,
) -> None:
    if importlib.util.find_spec("hypercorn") is None:
        missing_tool("hypercorn is not installed (pip install -e '.[dev]' brings it)")
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
    log = tmp_path / "hypercorn.log"
    command = [sys.executable, "-m", "hypercorn", "asgi:application"]
    with log.open("wb") as out:
        server = subprocess.Popen(
            [*command, "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # hypercorn binds only once the worker's lifespan start-up has completed.
        wait_for_log(
            log, lambda text: text.count(STARTED) == WORKERS, START_TIMEOUT, "both workers' start"
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
    assert "Lifespan" not in text, text
    assert "Traceback" not in text, text
