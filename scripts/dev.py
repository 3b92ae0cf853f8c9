#!/usr/bin/env python3
"""Developer entry point for channels-events.

Usage::

    python3 scripts/dev.py test [extra pytest args]
    python3 scripts/dev.py demo

Only the standard library is used here, so this runs with any Python >= 3.10 on a
fresh checkout: it creates ``.venv`` and installs the project into it on first use
(and again whenever ``pyproject.toml`` changes): ``test`` with its ``dev`` extra
(the whole toolchain), ``demo`` with its ``demo`` extra only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
VENV_BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
VENV_PYTHON = VENV_BIN / ("python.exe" if os.name == "nt" else "python")

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_DSN = f"host={PG_HOST} user=postgres dbname=postgres"

REDIS_URL_ENV = "CHANNELS_EVENTS_TEST_REDIS_URL"
REDIS_SERVER_ENV = "CHANNELS_EVENTS_REDIS_SERVER"
TEST_DB_ENV = "CHANNELS_EVENTS_TEST_DB"

PYTEST_NO_TESTS_COLLECTED = 5


class StepFailed(Exception):
    """A step failed; ``code`` is the exit status to leave with."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# --------------------------------------------------------------------------- output


def say(message: str) -> None:
    print(f"[dev] {message}", flush=True)


def banner(*lines: str, stream: str = "stdout") -> None:
    width = max(len(line) for line in lines) + 4
    rule = "!" * width
    out = sys.stderr if stream == "stderr" else sys.stdout
    body = "\n".join(f"! {line.ljust(width - 4)} !" for line in lines)
    print(f"\n{rule}\n{body}\n{rule}\n", file=out, flush=True)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


# --------------------------------------------------------------------------- venv


def venv_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(VENV)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env.get("PATH", "")])
    env.pop("PYTHONHOME", None)
    if extra:
        env.update(extra)
    return env


def run(
    name: str,
    cmd: Sequence[str | os.PathLike[str]],
    env: dict[str, str] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> int:
    shown = " ".join(str(part) for part in cmd)
    say(f"{name}: {shown}")
    code = subprocess.call([str(part) for part in cmd], cwd=ROOT, env=env or venv_env())
    if code not in ok_codes:
        raise StepFailed(f"{name} failed (exit status {code})", code if code > 0 else 1)
    return code


# The extras an install of each extra brings along: pyproject.toml's dev extra
# holds everything its demo extra does, so a virtualenv made for the tests
# serves the demo as it is.
EXTRAS_COVERING = {"demo": ("demo", "dev"), "dev": ("dev",)}


def _stamp(extra: str, digest: str) -> Path:
    return VENV / f".installed-{extra}-{digest}"


def ensure_venv(extra: str) -> None:
    """Make ``.venv`` and install the project with ``extra`` into it, unless that is done."""
    if not VENV_PYTHON.exists():
        say(f"creating virtualenv in {VENV.relative_to(ROOT)}/")
        run("venv", [sys.executable, "-m", "venv", VENV], env=dict(os.environ))

    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if any(_stamp(covering, digest).exists() for covering in EXTRAS_COVERING[extra]):
        say("virtualenv is up to date")
        return

    say(f"installing the project with its {extra} extra into .venv")
    run("pip", [VENV_PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run("pip", [VENV_PYTHON, "-m", "pip", "install", "--quiet", "-e", f".[{extra}]"])
    current = {_stamp(known, digest) for known in EXTRAS_COVERING}
    for old in VENV.glob(".installed-*"):
        if old not in current:
            old.unlink()
    _stamp(extra, digest).write_text(
        f"pip install -e '.[{extra}]' succeeded for this pyproject.toml\n"
    )
    say("install done")


# --------------------------------------------------------------------------- redis


def redis_ping(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when a RESP ``PING`` to host:port is answered with ``+PONG``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while b"\r\n" not in reply and len(reply) < 64:
                chunk = sock.recv(64)
                if not chunk:
                    break
                reply += chunk
    except OSError:
        return False
    return reply.startswith(b"+PONG")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def throwaway_redis(server: str) -> Iterator[str]:
    """Run a private, non-persistent redis-server; yields its URL."""
    tmpdir = tempfile.mkdtemp(prefix="channels-events-redis-")
    port = free_port()
    log_path = Path(tmpdir) / "redis.log"
    proc: subprocess.Popen[bytes] | None = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    server,
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    tmpdir,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own session: Ctrl-C reaches us, and we stop the server ourselves.
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while not redis_ping("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                output = log_path.read_text(errors="replace").strip()
                raise StepFailed(f"throwaway redis-server did not start:\n{output}")
            time.sleep(0.05)
        say(f"started throwaway redis-server on 127.0.0.1:{port} (pid {proc.pid})")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            say("stopped throwaway redis-server")
        shutil.rmtree(tmpdir, ignore_errors=True)


@contextmanager
def redis_for_tests() -> Iterator[list[str]]:
    """Export the Redis variables for the test run; yields a list of warnings."""
    warnings: list[str] = []
    server = shutil.which("redis-server") or ""
    os.environ[REDIS_SERVER_ENV] = server

    preset = os.environ.get(REDIS_URL_ENV, "")
    if preset:
        say(f"using Redis from {REDIS_URL_ENV}={preset}")
        yield warnings
        return

    if redis_ping(REDIS_HOST, REDIS_PORT):
        url = f"redis://{REDIS_HOST}:{REDIS_PORT}/0"
        say(f"Redis answers on {REDIS_HOST}:{REDIS_PORT}; {REDIS_URL_ENV}={url}")
        os.environ[REDIS_URL_ENV] = url
        yield warnings
        return

    if server:
        say(f"no Redis on {REDIS_HOST}:{REDIS_PORT}; starting one with {server}")
        with throwaway_redis(server) as url:
            os.environ[REDIS_URL_ENV] = url
            say(f"{REDIS_URL_ENV}={url}")
            yield warnings
        return

    if in_ci():
        banner(
            "ERROR: Redis is not available, and CI=true.",
            f"Nothing answers PING on {REDIS_HOST}:{REDIS_PORT} and no redis-server is on PATH.",
            "Redis-backed tests must run in CI: start Redis or install redis-server.",
            stream="stderr",
        )
        raise StepFailed("Redis unavailable under CI")

    lines = (
        "WARNING: Redis is NOT available.",
        f"Nothing answers PING on {REDIS_HOST}:{REDIS_PORT} and no redis-server is on PATH.",
        "Tests marked `redis` will be SKIPPED.",
        "Start Redis or install redis-server to run the whole suite.",
    )
    banner(*lines)
    warnings.append("Redis was unavailable: tests marked `redis` were SKIPPED")
    yield warnings


# --------------------------------------------------------------------------- postgres


def postgres_reachable() -> tuple[bool, str]:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1.0):
            pass
    except OSError as exc:
        return False, f"cannot connect to {PG_HOST}:{PG_PORT} ({exc})"
    probe = f"import psycopg\npsycopg.connect({PG_DSN!r}, connect_timeout=5).close()\n"
    try:
        result = subprocess.run(
            [str(VENV_PYTHON), "-c", probe],
            cwd=ROOT,
            env=venv_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        return False, "psycopg.connect() timed out"
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        detail = lines[-1] if lines else f"exit status {result.returncode}"
        return False, f"psycopg.connect({PG_DSN!r}) failed: {detail}"
    return True, ""


# --------------------------------------------------------------------------- browser and node

CHROMIUM_ENV = "CHANNELS_EVENTS_CHROMIUM"


def find_chromium() -> str | None:
    for candidate in (os.environ.get(CHROMIUM_ENV), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


def chromium_for_tests(warnings: list[str]) -> str | None:
    """Return Debian's Chromium for the browser test, installing it under CI if need be."""
    found = find_chromium()
    if found is None and in_ci() and shutil.which("apt-get") and os.geteuid() == 0:
        say("Chromium is missing: installing Debian's chromium package (CI=true)")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=apt_env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=apt_env)
        found = find_chromium()
    if found is not None:
        say(f"Chromium for the browser test: {found}")
        return found
    if in_ci():
        banner("ERROR: Chromium is not available, and CI=true.", stream="stderr")
        raise StepFailed("Chromium unavailable under CI")
    banner(
        "WARNING: Chromium was not found (install Debian's chromium package).",
        "The browser test will be SKIPPED.",
    )
    warnings.append("Chromium missing: the browser test was SKIPPED")
    return None


# The programs the topology tests (tests/test_topology.py) start, and the
# Debian package that brings each.
TOPOLOGY_PROGRAMS = {
    "haproxy": "haproxy",
    "redis-server": "redis-server",
    "redis-sentinel": "redis-sentinel",
}


def find_program(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")


def topology_tools_for_tests(warnings: list[str]) -> None:
    """Make sure HAProxy and Redis Sentinel are there, installing them under CI if need be."""
    missing = [name for name in TOPOLOGY_PROGRAMS if find_program(name) is None]
    if missing and in_ci() and shutil.which("apt-get") and os.geteuid() == 0:
        packages = sorted({TOPOLOGY_PROGRAMS[name] for name in missing})
        say(f"{', '.join(missing)} missing: installing Debian's {' '.join(packages)} (CI=true)")
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=apt_env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, env=apt_env)
        missing = [name for name in TOPOLOGY_PROGRAMS if find_program(name) is None]
    if not missing:
        say("HAProxy and Redis Sentinel for the topology tests: found")
        return
    if in_ci():
        banner(f"ERROR: {', '.join(missing)} not available, and CI=true.", stream="stderr")
        raise StepFailed("the topology tests' programs are unavailable under CI")
    banner(
        f"WARNING: {', '.join(missing)} not found (Debian's haproxy, redis-sentinel packages).",
        "The topology tests will be SKIPPED.",
    )
    warnings.append(f"{', '.join(missing)} missing: the topology tests were SKIPPED")


def js_tests(warnings: list[str]) -> None:
    """Run the browser client's tests with Node's test runner."""
    node = shutil.which("node")
    if node is None:
        if in_ci():
            raise StepFailed("node is not available under CI: the JS client tests must run")
        banner("WARNING: node was not found; the JS client tests were SKIPPED.")
        warnings.append("node missing: the JS client tests were SKIPPED")
        return
    run("node --test (JS client)", [node, "--test", "tests/js/"])


def _installed_typescript() -> str | None:
    """Return the version of TypeScript in node_modules, or None if it is not there."""
    try:
        manifest = json.loads((ROOT / "node_modules" / "typescript" / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = manifest.get("version")
    return version if isinstance(version, str) else None


def js_types(warnings: list[str]) -> None:
    """Check events.d.ts with tsc, against tests/js/usage.ts; npm ci installs the pinned tsc."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        if in_ci():
            raise StepFailed("node or npm is not available under CI: events.d.ts must be checked")
        banner("WARNING: node or npm was not found; tsc did NOT check events.d.ts.")
        warnings.append("node/npm missing: the TypeScript declarations were NOT checked")
        return
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/typescript"]["version"]
    if _installed_typescript() != pinned:
        run(f"npm ci (typescript {pinned})", [npm, "ci", "--no-audit", "--no-fund"])
    tsc = ROOT / "node_modules" / "typescript" / "bin" / "tsc"
    run("tsc --noEmit (events.d.ts)", [node, tsc, "-p", "tests/js"])


# --------------------------------------------------------------------------- docs


def docs_site() -> None:
    """Build the docs site into site/; a broken link, anchor or snippet fails the build."""
    # Material prints an end-of-life notice on every build; the build's own
    # warnings are what this step is about.
    env = venv_env({"NO_MKDOCS_2_WARNING": "1"})
    run("mkdocs build --strict", [VENV_PYTHON, "-m", "mkdocs", "build", "--strict"], env=env)


# --------------------------------------------------------------------------- commands


def cmd_test(pytest_args: list[str]) -> int:
    ensure_venv("dev")
    warnings: list[str] = []

    run("ruff check", [VENV_PYTHON, "-m", "ruff", "check", "."])
    run("ruff format", [VENV_PYTHON, "-m", "ruff", "format", "--check", "."])
    run("mypy", [VENV_PYTHON, "-m", "mypy"])
    docs_site()
    js_tests(warnings)
    js_types(warnings)
    chromium = chromium_for_tests(warnings)
    if chromium:
        os.environ[CHROMIUM_ENV] = chromium
    topology_tools_for_tests(warnings)

    pg_ok, pg_problem = postgres_reachable()
    if pg_ok:
        say(f"PostgreSQL is reachable on {PG_HOST}:{PG_PORT}")
    elif in_ci():
        banner(
            "ERROR: PostgreSQL is not available, and CI=true.",
            pg_problem,
            "The PostgreSQL test pass must run in CI.",
            stream="stderr",
        )
        raise StepFailed("PostgreSQL unavailable under CI")
    else:
        say(f"PostgreSQL is NOT reachable: {pg_problem}")

    with redis_for_tests() as redis_warnings:
        warnings.extend(redis_warnings)
        pytest = [VENV_PYTHON, "-m", "pytest"]

        say("pytest pass 1/2: full suite on SQLite")
        run("pytest (sqlite)", [*pytest, *pytest_args], env=venv_env({TEST_DB_ENV: "sqlite"}))

        if pg_ok:
            say("pytest pass 2/2: database tests (-m django_db) on PostgreSQL")
            run(
                "pytest (postgres)",
                [*pytest, "-m", "django_db", *pytest_args],
                env=venv_env({TEST_DB_ENV: "postgres"}),
                ok_codes=(0, PYTEST_NO_TESTS_COLLECTED),
            )
        else:
            banner(
                "WARNING: the PostgreSQL test pass did NOT run.",
                pg_problem,
                "Database tests ran on SQLite only.",
            )
            warnings.append("PostgreSQL was unreachable: the PostgreSQL pass did NOT run")

    for warning in warnings:
        say(f"WARNING: {warning}")
    suffix = " (with warnings above)" if warnings else ""
    say(
        f"PASSED: ruff, ruff format, mypy, mkdocs, node --test, tsc and pytest all "
        f"succeeded{suffix}"
    )
    return 0


def cmd_demo() -> int:
    ensure_venv("demo")
    port = os.environ.get("PORT", "8000")
    if not port.isdigit():
        raise StepFailed(f"PORT must be a number, got {port!r}")
    env = venv_env({"DJANGO_SETTINGS_MODULE": "demo.settings"})
    run("migrate", [VENV_PYTHON, "manage.py", "migrate", "--noinput"], env=env)

    daphne = str(VENV_BIN / ("daphne.exe" if os.name == "nt" else "daphne"))
    argv = [daphne, "-b", "127.0.0.1", "-p", port, "asgi:application"]
    say(f"serving the demo on http://127.0.0.1:{port}/ (Ctrl-C to stop)")
    os.chdir(ROOT)
    if os.name == "nt":
        return subprocess.call(argv, env=env)
    os.execve(daphne, argv, env)
    return 0  # not reached


def _raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into SystemExit so context managers clean up (throwaway Redis).
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    usage = "usage: python3 scripts/dev.py {test [pytest args...] | demo}"
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(usage)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    signal.signal(signal.SIGTERM, _raise_on_sigterm)
    try:
        if command == "test":
            return cmd_test(rest)
        if command == "demo":
            if rest:
                print(f"demo takes no arguments\n{usage}", file=sys.stderr)
                return 2
            return cmd_demo()
    except StepFailed as exc:
        print(f"[dev] FAILED: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print("\n[dev] interrupted", file=sys.stderr, flush=True)
        return 130
    print(f"unknown command {command!r}\n{usage}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
