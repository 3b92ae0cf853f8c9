"""A listener that takes 10 ms, for ``bench/observers.py``.

In a module of its own so that it has an import path, as task listeners must.
"""

from __future__ import annotations

import time
from typing import Any


def take_10ms(event: Any) -> None:
    """Stand in for slow work: an email sent, an API called."""
    time.sleep(0.01)
