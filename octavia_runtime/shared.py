"""Objects made once per process and shared, such as a service's loaded models.

A service's API and its stage worker run in one process and must not load the
same model twice; `once` gives them the same object for the same key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_made: dict[Hashable, Any] = {}
_lock = threading.Lock()


def once(key: Hashable, make: Callable[[], T]) -> T:
    """The object made for `key` in this process, made by `make()` on first use (keep `make` cheap: load lazily)."""
    with _lock:
        if key not in _made:
            _made[key] = make()
        return _made[key]
