"""The built wheel in a fresh virtualenv, shared by test_wheel.py and test_quickstart.py.

The wheel is built (``pip wheel``) from a copy of this checkout, so local
build directories cannot leak into it. The virtualenv gets the wheel with
its ``redis`` and ``daphne`` extras (the README's install line) and
``uvicorn[standard]``, all from PyPI. ``conftest.py`` makes each once per
session.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import missing_tool

ROOT = Path(__file__).resolve().parent.parent
# Local state of a checkout that has no place in a build.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "node_modules"
)
# Variables of this test run that must not reach the installed project's processes.
NOT_INHERITED = {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
# What the README says to install: the wheel's extras, and uvicorn for the other server.
EXTRAS = "redis,daphne"
ALSO_INSTALLED = ("uvicorn[standard]",)


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
    """Return this process's environment without what belongs to the test run."""
    env = {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if bin_dir is not None:
        env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    return env


def build_wheel(work: Path) -> Path:
    """Build the wheel from a copy of the checkout, under ``work``; return its path."""
    for module in ("pip", "venv", "ensurepip"):
        if importlib.util.find_spec(module) is None:
            missing_tool(f"python -m {module} is not available for {sys.executable}")
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


@dataclass(frozen=True)
class Venv:
    """A virtualenv and the environment its commands run with."""

    path: Path
    bin_dir: Path
    env: dict[str, str]

    @property
    def python(self) -> Path:
        return self.bin_dir / ("python.exe" if os.name == "nt" else "python")

    def executable(self, name: str) -> Path:
        """Return the path of a console script installed into this virtualenv."""
        return self.bin_dir / (f"{name}.exe" if os.name == "nt" else name)


def make_venv(path: Path, wheel: Path) -> Venv:
    """Make a fresh virtualenv at ``path`` and install the wheel as the README says."""
    run([sys.executable, "-m", "venv", path], cwd=path.parent, env=clean_env())
    bin_dir = path / ("Scripts" if os.name == "nt" else "bin")
    env = clean_env(bin_dir)
    env["VIRTUAL_ENV"] = str(path)
    venv = Venv(path, bin_dir, env)
    run(
        [venv.python, "-m", "pip", "install", "--quiet", f"{wheel}[{EXTRAS}]", *ALSO_INSTALLED],
        cwd=path.parent,
        env=env,
    )
    return venv
