"""The docs stay true to the code: the settings reference is the settings table."""

from __future__ import annotations

import importlib.util
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
    for key, setting in SETTINGS.items():
        assert f"## `{key}`\n\n{setting.description}\n" in page
        assert f"Default: `{setting.default!r}`. Expected: {setting.expected}." in page
