"""Several daphnes of the demo behind HAProxy, on Redis with Sentinel or two Redis shards.

Run from the repository root:

    .venv/bin/python bench/topology.py up [--daphnes 2] [--layer sentinel|sharded]
    .venv/bin/python bench/topology.py down

``up`` starts, each on a free loopback port, in a new temporary directory:

- ``--layer sentinel`` (the default): a Redis master, a replica of it and three
  Redis Sentinels watching it under the name ``topology``; both channel
  layers of the demo (``RedisChannelLayer`` and the hub's
  ``RedisPubSubChannelLayer``) reach the master through the sentinels
  (channels_redis' ``{"master_name": ..., "sentinels": [...]}`` host), and so
  does the history;
- ``--layer sharded``: two Redis servers, given to both layers as two hosts
  (channels_redis spreads groups over them; the first keeps the history);
- ``--layer single``: one Redis server (what ``bench/capacity.py`` uses);
- ``--daphnes`` daphne processes of the demo (``asgi:application``, settings
  ``bench.topology_settings``: the demo's, with the layers above);
- HAProxy, balancing websockets over the daphnes (``leastconn``, a TCP check
  every 500 ms, a connection to a server that refuses it goes to another).

It waits until every part answers (a websocket through HAProxy gets its
``welcome``), writes what it started to a state file
(``$TMPDIR/channels-events-topology.json``), prints the balancer's URL and
returns; the processes keep running. ``down`` stops them by pid and removes
the temporary directory. HAProxy and the Redis binaries are Debian's
packages (``haproxy``, ``redis-server``, ``redis-sentinel``), installed with
``apt-get`` where missing and this runs as root.

The fault runs (``bench/faults.py``) and the tests use :class:`Topology` as a
context manager: everything it started is stopped, and its directory
removed, on the way out, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(tempfile.gettempdir()) / "channels-events-topology.json"
MASTER_NAME = "topology"
START_TIMEOUT = 40.0
STOP_TIMEOUT = 15.0
# HAProxy wants two descriptors a connection; this fits under a 20,000 limit.
BALANCER_MAXCONN = 9000
#: Redis behind the layers: with Sentinel, two shards, or one server (no failover).
LAYERS = ("sentinel", "sharded", "single")

#: The Debian package that brings each program.
PACKAGES = {
    "haproxy": "haproxy",
    "redis-server": "redis-server",
    "redis-sentinel": "redis-sentinel",
}


class TopologyError(RuntimeError):
    """A part of the topology could not be installed, started or reached."""


def say(message: str) -> None:
    print(f"[topology] {message}", file=sys.stderr, flush=True)


def find_program(name: str) -> str | None:
    """Return the path of ``name`` on PATH or in Debian's sbin directories, if any."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def ensure_programs(names: tuple[str, ...] = tuple(PACKAGES)) -> dict[str, str]:
    """Return the paths of ``names``, installing Debian's packages for the missing ones.

    apt-get runs only as root; elsewhere a missing program is a TopologyError
    that names the package to install.
    """
    missing = [name for name in names if find_program(name) is None]
    if missing and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        packages = sorted({PACKAGES[name] for name in missing})
        say(f"installing Debian packages: {' '.join(packages)}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, env=env)
    found = {name: find_program(name) for name in names}
    still = [name for name, path in found.items() if path is None]
    if still:
        packages = " ".join(sorted({PACKAGES[name] for name in still}))
        raise TopologyError(f"{', '.join(still)} not found: install Debian's {packages}")
    return {name: path for name, path in found.items() if path is not None}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_ask(port: int, *command: str, timeout: float = 0.5) -> bytes:
    """Send one command to the Redis (or Sentinel) on ``port``; return the raw reply."""
    parts = [f"*{len(command)}\r\n".encode()]
    for word in command:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(b"".join(parts))
        reply = b""
        while not reply.endswith(b"\r\n") or reply.count(b"\r\n") < _lines_needed(reply):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def _lines_needed(reply: bytes) -> int:
    # Enough of RESP for the replies read here: simple strings, bulk strings,
    # and flat arrays of bulk strings.
    if reply.startswith(b"$"):
        return 1 if reply.startswith(b"$-1") else 2
    if reply.startswith(b"*"):
        count = int(reply[1 : reply.index(b"\r\n")])
        return 1 + 2 * max(count, 0)
    return 1


def redis_answers(port: int) -> bool:
    try:
        return redis_ask(port, "PING").startswith(b"+PONG")
    except OSError:
        return False


def master_port(sentinel_port: int) -> int | None:
    """Return the master's port as the sentinel on ``sentinel_port`` sees it."""
    try:
        reply = redis_ask(sentinel_port, "SENTINEL", "get-master-addr-by-name", MASTER_NAME)
    except OSError:
        return None
    lines = reply.split(b"\r\n")
    if not reply.startswith(b"*2") or len(lines) < 5:
        return None
    return int(lines[4])


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def websocket_welcome(port: int, timeout: float = 5.0) -> bool:
    """Open ``/ws/events/`` on ``port`` by hand and return whether ``welcome`` came back."""
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    request = (
        "GET /ws/events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Origin: http://127.0.0.1\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(request.encode())
            data = b""
            deadline = time.monotonic() + timeout
            while b'"welcome"' not in data and time.monotonic() < deadline:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return b'"welcome"' in data
    except OSError:
        return False


@dataclass
class Process:
    """One process of the topology: its name, port, command and log."""

    name: str
    port: int
    argv: list[str]
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None


@dataclass
class Topology:
    """The processes of one topology, started on ``__enter__`` or :meth:`start`."""

    daphnes: int = 2
    layer: str = "sentinel"
    history: int = 1000
    prefix: str = field(default_factory=lambda: f"topology{os.getpid()}")
    server: str = "daphne"
    balanced: bool = True
    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="topology-")))
    redis: list[Process] = field(default_factory=list)
    sentinels: list[Process] = field(default_factory=list)
    servers: list[Process] = field(default_factory=list)
    balancer: Process | None = None

    def __post_init__(self) -> None:
        if self.layer not in LAYERS:
            raise TopologyError(f"layer must be one of {', '.join(LAYERS)}, got {self.layer!r}")
        if self.daphnes < 1:
            raise TopologyError(f"daphnes must be 1 or more, got {self.daphnes!r}")

    # -- what the clients and publishers need -----------------------------------

    @property
    def url(self) -> str:
        """Return the websocket URL of the event stream through the balancer."""
        assert self.balancer is not None
        return f"ws://127.0.0.1:{self.balancer.port}/ws/events/"

    def hosts(self) -> list[Any]:
        """Return the ``hosts`` of both channel layers."""
        if self.layer == "sentinel":
            return [
                {
                    "master_name": MASTER_NAME,
                    "sentinels": [["127.0.0.1", s.port] for s in self.sentinels],
                    # Fail fast on a dead master, so the layer asks the sentinels again.
                    "socket_connect_timeout": 1,
                    "socket_timeout": 5,
                    "sentinel_kwargs": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
                }
            ]
        return [f"redis://127.0.0.1:{r.port}/0" for r in self.redis]

    def django_env(self) -> dict[str, str]:
        """Return the environment of a Django process of this topology (daphne, publisher)."""
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="bench.topology_settings",
            TOPOLOGY_HOSTS=json.dumps(self.hosts()),
            TOPOLOGY_PREFIX=self.prefix,
            TOPOLOGY_HISTORY=str(self.history),
            DEMO_DB_PATH=str(self.directory / "demo.sqlite3"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        )
        return env

    def processes(self) -> list[Process]:
        balancer = [self.balancer] if self.balancer is not None else []
        return [*balancer, *self.servers, *self.sentinels, *self.redis]

    # -- starting and stopping ----------------------------------------------------

    def __enter__(self) -> Topology:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every part, and return once a websocket through the balancer is welcomed."""
        programs = ensure_programs()
        if self.layer == "sentinel":
            self._start_sentinel(programs["redis-server"], programs["redis-sentinel"])
        else:
            for index in range(2 if self.layer == "sharded" else 1):
                self._start_redis(programs["redis-server"], f"shard{index}")
        for index in range(self.daphnes):
            self.servers.append(self._server_process(index))
            self.spawn(self.servers[-1])
        for server in self.servers:
            self.wait(server, lambda s: websocket_welcome(s.port))
        if not self.balanced:
            say(f"up: {self.daphnes} {self.server} on {self.layer} ({self.directory})")
            return
        self._start_balancer(programs["haproxy"])
        say(f"up: {self.url} over {self.daphnes} {self.server} on {self.layer} ({self.directory})")

    def _redis_argv(self, redis_server: str, port: int, name: str) -> list[str]:
        workdir = self.directory / name
        workdir.mkdir()
        return [
            redis_server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ]

    def _start_redis(self, redis_server: str, name: str, *extra: str) -> Process:
        port = free_port()
        process = Process(name, port, [*self._redis_argv(redis_server, port, name), *extra])
        self.redis.append(process)
        self.spawn(process)
        self.wait(process, lambda p: redis_answers(p.port))
        return process

    def _start_sentinel(self, redis_server: str, redis_sentinel: str) -> None:
        master = self._start_redis(redis_server, "master")
        self._start_redis(redis_server, "replica", "--replicaof", "127.0.0.1", str(master.port))
        for index in range(3):
            port = free_port()
            conf = self.directory / f"sentinel{index}.conf"
            # A sentinel rewrites its file as it learns: each one has its own.
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 5000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n"
            )
            process = Process(f"sentinel{index}", port, [redis_sentinel, str(conf)])
            self.sentinels.append(process)
            self.spawn(process)
        for sentinel in self.sentinels:
            self.wait(sentinel, lambda s: master_port(s.port) == master.port)

    def _server_process(self, index: int) -> Process:
        port = free_port()
        python = sys.executable
        if self.server == "uvicorn":
            argv = [python, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port)]
            argv += ["--log-level", "warning", "--ws-max-queue", "1024", "asgi:application"]
        else:
            argv = [python, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "-v", "0"]
            argv.append("asgi:application")
        return Process(f"{self.server}{index}", port, argv, self.django_env())

    def _start_balancer(self, haproxy: str) -> None:
        port = free_port()
        conf = self.directory / "haproxy.cfg"
        servers = "\n".join(
            f"    server {s.name} 127.0.0.1:{s.port} check inter 500 fall 1 rise 2"
            for s in self.servers
        )
        # Long tunnel timeouts: an idle websocket is not a dead one. A
        # connection refused by a server on its way down is tried again on
        # another one (redispatch), as a balancer in front of a deploy does.
        conf.write_text(
            f"global\n    maxconn {BALANCER_MAXCONN}\n\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 1h\n"
            "    timeout server 1h\n    timeout tunnel 1h\n    retries 3\n"
            "    option redispatch\n\n"
            f"frontend events\n    bind 127.0.0.1:{port}\n"
            f"    maxconn {BALANCER_MAXCONN}\n"
            "    default_backend daphnes\n\n"
            f"backend daphnes\n    balance leastconn\n{servers}\n"
        )
        self.balancer = Process("haproxy", port, [haproxy, "-f", str(conf), "-db"])
        self.spawn(self.balancer)
        self.wait(self.balancer, lambda b: websocket_welcome(b.port))

    def spawn(self, process: Process) -> None:
        """Start ``process``, its output appended to ``<directory>/<name>.log``."""
        with open(self.directory / f"{process.name}.log", "ab") as log:
            process.popen = subprocess.Popen(
                process.argv,
                cwd=ROOT,
                env=process.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self, process: Process) -> str:
        path = self.directory / f"{process.name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait(self, process: Process, ready: Any, timeout: float = START_TIMEOUT) -> None:
        """Poll ``ready(process)`` until true; raise with the process's log if it never is."""
        deadline = time.monotonic() + timeout
        while not ready(process):
            if not process.running():
                raise TopologyError(f"{process.name} exited:\n{self.log(process)[-3000:]}")
            if time.monotonic() > deadline:
                raise TopologyError(
                    f"{process.name} not ready in {timeout}s:\n{self.log(process)[-3000:]}"
                )
            time.sleep(0.1)

    def send_signal(self, process: Process, signum: int) -> None:
        """Send ``signum`` to ``process`` (by its pid)."""
        if process.running() and process.pid is not None:
            os.kill(process.pid, signum)

    def halt(self, process: Process, signum: int = signal.SIGTERM) -> None:
        """Stop ``process`` with ``signum``, then SIGKILL if it has not exited in time."""
        if process.popen is None:
            return
        if process.running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.popen.pid, signal.SIGCONT)  # a stopped one cannot exit
                os.kill(process.popen.pid, signum)
            try:
                process.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.popen.kill()
                process.popen.wait()

    def restart(self, process: Process, signum: int = signal.SIGTERM) -> float:
        """Stop a server with ``signum``, start it again on its port; return seconds it was away."""
        stopped = time.monotonic()
        self.halt(process, signum)
        self.spawn(process)
        self.wait(process, lambda s: websocket_welcome(s.port))
        return time.monotonic() - stopped

    def stop(self) -> None:
        """Stop everything started, by pid, and remove the directory."""
        for process in self.processes():
            try:
                self.halt(process)
            except Exception as exc:  # keep going: the rest must stop too
                say(f"stopping {process.name} failed: {exc}")
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- state file for the command line ------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "url": self.url,
            "pids": [p.pid for p in self.processes() if p.pid is not None],
            "hosts": self.hosts(),
            "prefix": self.prefix,
        }


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so that a Topology being used stops what it started."""

    def leave(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def stop_pids(pids: list[int]) -> None:
    """SIGTERM each pid, wait a while for all, then SIGKILL those left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie of ours is not alive: reap it if it is a child.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def command_up(args: argparse.Namespace) -> int:
    if STATE.exists():
        say(f"{STATE} exists: run 'down' first")
        return 1
    topology = Topology(daphnes=args.daphnes, layer=args.layer, server=args.server)
    try:
        topology.start()
        STATE.write_text(json.dumps(topology.state(), indent=2))
    except BaseException:
        topology.stop()
        raise
    # The processes outlive this command; 'down' stops them.
    for process in topology.processes():
        process.popen = None
    print(topology.url)
    return 0


def command_down(args: argparse.Namespace) -> int:
    if not STATE.exists():
        say("nothing is up")
        return 0
    state = json.loads(STATE.read_text())
    stop_pids(state["pids"])
    shutil.rmtree(state["directory"], ignore_errors=True)
    STATE.unlink()
    say(f"down: stopped {len(state['pids'])} processes, removed {state['directory']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a topology and leave it running")
    up.add_argument("--daphnes", type=int, default=2)
    up.add_argument("--layer", choices=LAYERS, default="sentinel")
    up.add_argument("--server", choices=("daphne", "uvicorn"), default="daphne")
    sub.add_parser("down", help="stop the topology 'up' started")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    try:
        return command_up(args) if args.command == "up" else command_down(args)
    except TopologyError as exc:
        say(f"failed: {exc}")
        return 1


@contextlib.contextmanager
def topology(**options: Any) -> Iterator[Topology]:
    """Run a :class:`Topology` for the duration of a ``with`` block."""
    with Topology(**options) as running:
        yield running


if __name__ == "__main__":
    sys.exit(main())
