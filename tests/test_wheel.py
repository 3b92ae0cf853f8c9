"""The wheel: it holds the whole package, and a new Django project can use it.

The wheel is built (``pip wheel``) from a copy of this checkout, so local
build directories cannot leak into it, and installed with its dependencies
from PyPI into a fresh virtualenv. A project made there with ``django-admin
startproject`` then runs ``manage.py check``, ``manage.py events check`` and
``manage.py events list``, from a directory where this checkout is not
importable.
"""

from __future__ import annotations

import email
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

import django
import pytest

import channels_events
from tests.conftest import missing_tool

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "channels_events"
VERSION = channels_events.__version__
DIST_INFO = f"channels_events-{VERSION}.dist-info"
# Local state of a checkout that has no place in a build.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules"
)
# Variables of this test run that must not reach the new project's processes.
NOT_INHERITED = {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}


def run(args: Sequence[str | Path], cwd: Path, env: dict[str, str]) -> str:
    """Run a command; fail with its output unless it exits 0; return stdout and stderr."""
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    output = result.stdout + result.stderr
    shown = " ".join(str(arg) for arg in args)
    assert result.returncode == 0, f"{shown} exited {result.returncode}:\n{output}"
    return output


def clean_env(bin_dir: Path | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if bin_dir is not None:
        env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the checkout; return its path."""
    for module in ("pip", "venv", "ensurepip"):
        if importlib.util.find_spec(module) is None:
            missing_tool(f"python -m {module} is not available for {sys.executable}")
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    dist = work / "dist"
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", dist, source],
        cwd=work,
        env=clean_env(),
    )
    [built] = dist.glob("*.whl")
    return built


def test_the_wheel_holds_the_whole_package_and_the_license(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(archive.read(f"{DIST_INFO}/METADATA"))

    assert wheel.name == f"channels_events-{VERSION}-py3-none-any.whl"
    for required in (
        "channels_events/management/__init__.py",
        "channels_events/management/commands/__init__.py",
        "channels_events/management/commands/events.py",
        "channels_events/static/channels_events/events.js",
        "channels_events/static/channels_events/events.d.ts",
        "channels_events/py.typed",
        f"{DIST_INFO}/licenses/LICENSE",
    ):
        assert required in names, f"{required} is missing from {wheel.name}"
    # Every file of the package, so a new subpackage or data file cannot be forgotten.
    for path in PACKAGE.rglob("*"):
        if path.is_file() and "__pycache__" not in path.parts:
            relative = path.relative_to(ROOT).as_posix()
            assert relative in names, f"{relative} is missing from {wheel.name}"
    # And nothing of the repository beside the package: tests, demo, consumers.
    strays = sorted(
        name for name in names if not name.startswith(("channels_events/", f"{DIST_INFO}/"))
    )
    assert strays == []

    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert metadata.get_all("License-File") == ["LICENSE"]
    classifiers = metadata.get_all("Classifier")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert f"Programming Language :: Python :: {python}" in classifiers
    assert f"Framework :: Django :: {django.VERSION[0]}.{django.VERSION[1]}" in classifiers


def test_a_new_project_runs_the_events_command_from_the_installed_wheel(
    wheel: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, env=clean_env())
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    env = clean_env(bin_dir)
    env["VIRTUAL_ENV"] = str(venv)
    run([python, "-m", "pip", "install", "--quiet", wheel], cwd=tmp_path, env=env)

    project = tmp_path / "project"
    project.mkdir()
    run([bin_dir / "django-admin", "startproject", "mysite", project], cwd=tmp_path, env=env)
    settings = project / "mysite" / "settings.py"
    settings.write_text(
        settings.read_text() + '\nINSTALLED_APPS += ["channels", "channels_events"]\n'
    )

    def manage(*args: str) -> str:
        return run([python, "manage.py", *args], cwd=project, env=env)

    where = run(
        [python, "-c", "import channels_events; print(channels_events.__file__)"],
        cwd=project,
        env=env,
    )
    assert Path(where.strip()).is_relative_to(venv), where

    # A new project has no channel layer: the check says so, and how to add one.
    checked = manage("check")
    assert "channels_events.W002" in checked
    assert "CHANNEL_LAYERS" in checked

    events_check = manage("events", "check")
    assert "CHANNELS_EVENTS:" in events_check
    assert "GROUP_PREFIX = 'events'" in events_check
    assert "Channel layer: none" in events_check

    listed = manage("events", "list")
    assert "Listeners (in delivery order per event):" in listed
    assert "Namespaces joined by the hub:" in listed

    found = manage("findstatic", "channels_events/events.js")
    assert str(venv) in found
