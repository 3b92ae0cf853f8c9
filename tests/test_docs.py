"""The docs stay true to the code and to themselves.

The site's own links are checked by ``mkdocs build --strict`` (``scripts/dev.py
test`` runs it); the README is not part of the site, so its links are checked
here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

from channels_events._conf import SETTINGS

ROOT = Path(__file__).resolve().parent.parent


def _settings_doc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("settings_doc", ROOT / "scripts/settings_doc.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_settings_page_is_what_the_script_writes_from_the_settings_table() -> None:
    page = (ROOT / "docs" / "settings.md").read_text()
    assert page == _settings_doc().render(), (
        "docs/settings.md is stale: run `.venv/bin/python scripts/settings_doc.py` and commit it"
    )
    flat = " ".join(page.split())
    for key, setting in SETTINGS.items():
        assert f"## `{key}` {setting.description}" in flat
        assert f"Default: `{setting.default!r}`. Expected: {setting.expected}." in flat


def test_every_relative_link_of_the_readme_names_a_file_of_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    relative = [t for t in targets if not t.startswith(("http://", "https://", "#"))]
    assert "docs/settings.md" in relative  # the pattern finds the README's links
    missing = [t for t in relative if not (ROOT / t.partition("#")[0]).is_file()]
    assert missing == [], f"README.md links to files that do not exist: {missing}"
