"""A process that forks after its hub started (Celery prefork, gunicorn --preload)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest
import redis

from tests.hubproc import hub_env

ROOT = Path(__file__).resolve().parent.parent

FORKING_SENDER = textwrap.dedent(
    """
    import os, django
    django.setup()
    from channels_events import dispatch
    from channels_events._hub import get_hub, start_hub

    start_hub()
    dispatch("fork::parent::before", {})
    assert get_hub().flush(5)
    pid = os.fork()
    if pid == 0:
        dispatch("fork::child::sent", {})
        os._exit(0 if get_hub().flush(5) else 3)
    _, status = os.waitpid(pid, 0)
    dispatch("fork::parent::after", {})
    assert get_hub().flush(5)
    print("child exit", os.waitstatus_to_exitcode(status), flush=True)
    """
)


@pytest.mark.redis
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_publishes_its_own_events(redis_url: str, redis_prefix: str) -> None:
    env = hub_env(redis_url, redis_prefix)
    manage = [sys.executable, "manage.py", "events"]
    listener = subprocess.Popen(
        [*manage, "listen", "fork::.*", "--count", "3", "--timeout", "40"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Give the listener time to start and join its group.
        time.sleep(3)
        sender = subprocess.run(
            [sys.executable, "-c", FORKING_SENDER],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sender.returncode == 0, sender.stderr
        assert "child exit 0" in sender.stdout, (sender.stdout, sender.stderr)
        assert "Recording events in the history failed" not in sender.stderr, sender.stderr
        out, err = listener.communicate(timeout=40)
    finally:
        listener.kill()
    names = [json.loads(line)["name"] for line in out.splitlines() if line.strip()]
    assert sorted(names) == ["fork::child::sent", "fork::parent::after", "fork::parent::before"], (
        out,
        err,
    )
    # Both processes recorded their events in the history too: the child's
    # fresh hub did not break the parent's Redis connections on its way.
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(f"{redis_prefix}:history:fork")
    finally:
        client.close()
    recorded = [msgpack.unpackb(fields[b"event"])["name"] for _id, fields in entries]
    assert recorded == ["fork::parent::before", "fork::child::sent", "fork::parent::after"], (
        sender.stderr
    )
