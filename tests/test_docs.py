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
from tests.test_quickstart import BLOCK, SECTION

ROOT = Path(__file__).resolve().parent.parent
# Every line inside the quickstart's fenced blocks, blank lines and commands included.
QUICKSTART_MAX_LINES = 40


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


def quickstart_code_lines(readme: str) -> int:
    """Return how many lines the quickstart's fenced code blocks hold, blank ones included."""
    section = SECTION.search(readme)
    assert section, "README.md has no section between the quickstart snippet markers"
    return sum(len(block["code"].splitlines()) for block in BLOCK.finditer(section["body"]))


def test_the_readme_quickstart_is_at_most_40_lines_of_code() -> None:
    sample = (
        "<!-- --8<-- [start:quickstart] -->\nProse is not counted.\n"
        "```sh\ndjango-admin startproject mysite\n\ncd mysite\n```\n"
        "<!-- quickstart: shop/policy.py -->\n```python\nimport os\n```\n"
        "<!-- --8<-- [end:quickstart] -->\n"
    )
    assert quickstart_code_lines(sample) == 4  # the blank line counts

    count = quickstart_code_lines((ROOT / "README.md").read_text())
    assert 0 < count <= QUICKSTART_MAX_LINES, (
        f"the README quickstart's code blocks hold {count} lines; "
        f"keep them to {QUICKSTART_MAX_LINES} at most"
    )
