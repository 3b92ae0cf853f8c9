#!/usr/bin/env python3
"""Django's command-line utility for the demo project."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "demo.settings")
    try:
        from django.core.management import execute_from_command_line
    except ImportError as exc:
        raise ImportError(
            "Couldn't import Django. Is it installed and is the virtualenv active? "
            "`python3 scripts/dev.py demo` sets one up."
        ) from exc
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
