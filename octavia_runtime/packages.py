"""Whether the Python packages an engine needs are installed on this worker."""

from __future__ import annotations

import importlib.util
import shutil


def installed(*modules: str) -> bool:
    """True when every module can be imported (without importing it: models are heavy)."""
    return all(importlib.util.find_spec(module) is not None for module in modules)


def on_path(*programs: str) -> bool:
    return all(shutil.which(program) for program in programs)
