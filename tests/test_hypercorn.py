"""This repository's asgi.py under hypercorn with two workers: lifespan works, websockets too.

hypercorn sends ASGI lifespan events, which Django's and Channels' applications
do not handle; HubMiddleware answers them, so hypercorn never logs that it
continues "without Lifespan support", and each worker's hub starts at start-up
and stops at shut-down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_uvicorn import serve_demo

pytestmark = pytest.mark.timeout(120)

STARTED = "Running on http://"


def test_asgi_py_under_hypercorn_handles_lifespan_and_welcomes_websockets(
    tmp_path: Path,
) -> None:
    # hypercorn binds only once the worker's lifespan start-up has completed.
    text = serve_demo(tmp_path, "hypercorn", lambda port: ["--bind", f"127.0.0.1:{port}"], STARTED)
    assert "Lifespan" not in text, text
    assert "Traceback" not in text, text
