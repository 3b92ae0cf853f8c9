"""The README's quickstart, followed step by step in a fresh project, under daphne and uvicorn.

The quickstart is the part of README.md between its ``quickstart`` snippet
markers. Its ``sh`` blocks are run line by line in a temporary directory;
every other block is a file, named by the HTML comment just before it
(``<!-- quickstart: mysite/asgi.py -->`` writes the file,
``<!-- quickstart: append mysite/settings.py -->`` appends to it). What this
test changes, and only that: ``django-admin``, ``python``, ``daphne`` and
``uvicorn`` are those of a fresh virtualenv holding the built wheel,
installed as the README says (``tests/installed.py``: the wheel with its
``redis`` and ``daphne`` extras, and ``uvicorn[standard]``, from PyPI; made
once per session), so the project imports the wheel's ``channels_events``,
never the checkout's; the server listens on a free port of 127.0.0.1 instead
of 8000; and the channel layer is pointed at the test's Redis under a key
prefix of its own.

Once the server answers, Chromium opens the page; the quickstart's next
command saves an Order from a separate ``manage.py shell`` process, and the
line the README promises must appear on the page: the event crossed Redis
from one process to the other.
"""

from __future__ import annotations

import contextlib
import re
import shlex
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.conftest import CHROMIUM_ARGS, chromium_executable
from tests.installed import Venv

pytestmark = [pytest.mark.redis, pytest.mark.browser, pytest.mark.wheel, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 40.0
EVENT_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0

SECTION = re.compile(
    r"<!-- --8<-- \[start:quickstart\] -->\n(?P<body>.*?)<!-- --8<-- \[end:quickstart\] -->",
    re.DOTALL,
)
BLOCK = re.compile(
    r"(?:<!-- quickstart: (?P<append>append )?(?P<path>[\w./-]+) -->\n)?"
    r"```(?P<lang>\w*)\n(?P<code>.*?)```",
    re.DOTALL,
)
# The README's promise about the page, e.g. "The page shows `shop::Order::created ...`".
PROMISE = re.compile(r"The page shows `(?P<text>[^`]+)`")


@dataclass(frozen=True)
class Step:
    """One thing the quickstart says to do: run a command line, or write or append a file."""

    kind: str  # "run", "write" or "append"
    text: str
    path: str = ""


def quickstart() -> tuple[list[Step], str]:
    """Return the README quickstart's steps, in order, and the text it says the page shows."""
    found = SECTION.search((ROOT / "README.md").read_text())
    assert found, "README.md has no section between the quickstart snippet markers"
    body = found["body"]
    steps: list[Step] = []
    for block in BLOCK.finditer(body):
        if block["path"]:
            kind = "append" if block["append"] else "write"
            steps.append(Step(kind, block["code"], block["path"]))
        else:
            assert block["lang"] == "sh", f"a quickstart block names no file:\n{block[0]}"
            steps.extend(Step("run", line) for line in block["code"].splitlines() if line)
    promise = PROMISE.search(body)
    assert promise, "the quickstart does not say what the page shows"
    return steps, promise["text"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Project:
    """A fresh project in a temporary directory, built and served as the quickstart says."""

    def __init__(
        self, tmp_path: Path, venv: Venv, server: str, redis_url: str, prefix: str
    ) -> None:
        self.cwd = tmp_path
        self.venv = venv
        self.server = server
        self.redis_url = redis_url
        self.prefix = prefix
        self.port = free_port()
        self.log = tmp_path / f"{server}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {**venv.env, "PYTHONUNBUFFERED": "1"}

    def run(self, line: str) -> None:
        """Run one command line of the quickstart (commands joined by ``&&``)."""
        words = shlex.split(line, comments=True)
        while words:
            command = words[: words.index("&&")] if "&&" in words else words
            words = words[len(command) + 1 :]
            self._run_one(command)

    def _run_one(self, command: list[str]) -> None:
        program, args = command[0], command[1:]
        if program == "cd":
            self.cwd = self.cwd / args[0]
        elif program == "django-admin":
            self._call([str(self.venv.executable("django-admin")), *args])
        elif program == "python":
            self._call([str(self.venv.python), *args])
        elif program in {"daphne", "uvicorn"}:
            self._serve(args)
        else:
            pytest.fail(f"the quickstart runs {program!r}, which this test does not know")

    def _call(self, argv: list[str]) -> None:
        done = subprocess.run(
            argv, cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, f"{shlex.join(argv)} failed:\n{done.stdout}\n{done.stderr}"

    def write(self, step: Step) -> None:
        path = self.cwd / step.path
        if step.kind == "append":
            assert path.exists(), f"the quickstart appends to {step.path}, which does not exist"
            with path.open("a") as file:
                file.write("\n" + step.text)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(step.text)
        if step.path.endswith("settings.py"):
            # The test's Redis, under a prefix of its own: the one change to the settings.
            config = {"hosts": [self.redis_url], "prefix": self.prefix}
            with path.open("a") as file:
                file.write(f'\nCHANNEL_LAYERS["default"]["CONFIG"] = {config!r}\n')

    def _serve(self, args: list[str]) -> None:
        assert self.proc is None, "the quickstart starts a second server"
        (app,) = args
        if self.server == "daphne":
            argv = ["-b", "127.0.0.1", "-p", str(self.port), app]
        else:
            argv = [app, "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(self.venv.executable(self.server)), *argv],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not self._answers("/"):
            assert self.proc.poll() is None, f"{self.server} exited:\n{self.output()}"
            assert time.monotonic() < deadline, f"{self.server} did not answer:\n{self.output()}"
            time.sleep(0.2)

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def package(self) -> Path:
        """Return where the project's ``channels_events`` is imported from."""
        done = subprocess.run(
            [
                str(self.venv.python),
                "-c",
                "import channels_events; print(channels_events.__file__)",
            ],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        )
        return Path(done.stdout.strip()).resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def serving(self) -> bool:
        return self.proc is not None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()


@pytest.fixture(params=["daphne", "uvicorn"])
def project(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    installed: Venv,
    redis_url: str,
    redis_prefix: str,
) -> Iterator[Project]:
    made = Project(tmp_path, installed, str(request.param), redis_url, redis_prefix)
    try:
        yield made
    finally:
        made.stop()


def wait_for_group(project: Project, group: str) -> None:
    """Wait until the server's hub is in ``group`` (the core layer keeps groups in Redis)."""
    client = redis.Redis.from_url(project.redis_url)
    key = f"{project.prefix}:group:{group}"
    try:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while not client.zcard(key):
            assert time.monotonic() < deadline, f"no process joined {group}:\n{project.output()}"
            time.sleep(0.05)
    finally:
        client.close()


def open_page(page: Any, project: Project, frames: list[str]) -> None:
    """Open the quickstart's page; return once its subscription is live in the server's hub."""
    try:
        with urllib.request.urlopen(f"{project.url}/static/channels_events/events.js") as script:
            assert b"export function connect" in script.read()
    except urllib.error.HTTPError as exc:
        pytest.fail(f"the JS client is not served under /static/: {exc}")
    page.goto(f"{project.url}/")
    deadline = time.monotonic() + EVENT_TIMEOUT
    while not any('"type":"subscribed"' in frame for frame in frames):
        assert time.monotonic() < deadline, f"not subscribed: {frames}\n{project.output()}"
        page.wait_for_timeout(50)
    wait_for_group(project, "events.shop")


def test_the_readme_quickstart_shows_a_change_made_in_another_process(project: Project) -> None:
    steps, promised = quickstart()
    chromium = chromium_executable()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            frames: list[str] = []
            page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f)))
            for step in steps:
                if step.kind != "run":
                    project.write(step)
                elif project.serving:  # a command for "another terminal"
                    assert promised not in page.locator("body").inner_text()
                    project.run(step.text)
                else:
                    project.run(step.text)
                    if project.serving:
                        assert project.package().is_relative_to(project.venv.path.resolve())
                        open_page(page, project, frames)
            assert project.serving, "the quickstart never starts a server"
            sync_api.expect(page.locator("body")).to_contain_text(
                promised, timeout=EVENT_TIMEOUT * 1000
            )
        finally:
            browser.close()
