"""The wheel: it holds the whole package, and a new Django project can use it.

The wheel is built (``pip wheel``) from a copy of this checkout, so local
build directories cannot leak into it, and installed with its dependencies
from PyPI into a fresh virtualenv (``tests/installed.py``, once per session,
shared with test_quickstart.py). A project made there with ``django-admin
startproject`` then runs ``manage.py check``, ``manage.py events check`` and
``manage.py events list``, from a directory where this checkout is not
importable.
"""

from __future__ import annotations

import email
import sys
import zipfile
from pathlib import Path

import django
import pytest

import channels_events
from tests.installed import Venv, run

pytestmark = [pytest.mark.wheel, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "channels_events"
VERSION = channels_events.__version__
DIST_INFO = f"channels_events-{VERSION}.dist-info"


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
        "channels_events/static/channels_events/ops.js",
        "channels_events/templates/channels_events/ops.html",
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
    installed: Venv, tmp_path: Path
) -> None:
    venv, python, env = installed.path, installed.python, installed.env

    project = tmp_path / "project"
    project.mkdir()
    run(
        [installed.executable("django-admin"), "startproject", "mysite", project],
        cwd=tmp_path,
        env=env,
    )
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
