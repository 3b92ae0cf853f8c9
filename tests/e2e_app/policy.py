"""The emit policy of the end-to-end tests' daphnes: any client may emit in namespace ``shop``."""

from __future__ import annotations

from typing import Any


def can_emit(scope: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    """Let every connection emit events of namespace ``shop``."""
    return name.startswith("shop::")
