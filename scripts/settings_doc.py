"""Write docs/settings.md, the settings reference, from channels_events._conf.SETTINGS.

Run from the repository root after changing a setting:

    .venv/bin/python scripts/settings_doc.py           # rewrite docs/settings.md
    .venv/bin/python scripts/settings_doc.py --check   # exit 1 if the page is stale

The table in ``_conf.py`` (default, expected value, description) is the one
source; tests/test_docs.py fails when the committed page differs from what
this script writes.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "settings.md"

INTRO = """\
# Settings reference

<!-- Written by scripts/settings_doc.py from channels_events._conf.SETTINGS;
     edit the table there, not this page. -->

Every setting is optional and lives in one dict in your Django settings:

```python
CHANNELS_EVENTS = {
    "SUBSCRIBE_POLICY": "myproject.events_policy.can_subscribe",
    "HISTORY_SIZE": 5000,
}
```

`manage.py check` validates it: `channels_events.E001` when the setting is
not a dict; `E002` for a key that is not on this page, naming the closest
valid key (`STRICTT`: "Did you mean 'STRICT'?"); `E003` for a value that
breaks its key's rule, or a policy path that cannot be imported (with the
error the import raised). A misspelt key is never used: the library reads
only the keys below, and reading any other raises `UnknownSetting` (an
`AttributeError`). The other checks are listed in
[Operations](operations.md#system-checks).

Values are read when first used; `override_settings` in tests takes effect
at once.

| key | default |
| --- | --- |
"""


def _code(value: Any) -> str:
    return f"`{value!r}`"


def _wrap(text: str) -> str:
    # Only at spaces, so no link target or word is split.
    return textwrap.fill(text, width=76, break_long_words=False, break_on_hyphens=False)


def render() -> str:
    """Return the page for the settings table as it is now."""
    from channels_events._conf import SETTINGS

    rows = [f"| [`{key}`](#{key.lower()}) | {_code(s.default)} |" for key, s in SETTINGS.items()]
    sections = [
        f"## `{key}`\n\n{_wrap(s.description)}\n\n"
        f"{_wrap(f'Default: {_code(s.default)}. Expected: {s.expected}.')}\n"
        for key, s in SETTINGS.items()
    ]
    return INTRO + "\n".join(rows) + "\n\n" + "\n".join(sections)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is stale")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text() != page:
            print(
                f"{PAGE.relative_to(ROOT)} is stale: run scripts/settings_doc.py", file=sys.stderr
            )
            return 1
        return 0
    PAGE.write_text(page)
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
