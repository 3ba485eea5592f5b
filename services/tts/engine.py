"""What every speech synthesis engine is: the interface, its audio, its errors.

The engines themselves are in engines.py (the shipped ones) and coqui.py (the
optional one); both build on this module.
"""

from __future__ import annotations

import io
import os
import threading
import time
import wave
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import structlog

from octavia_runtime.config import Config
from octavia_runtime.packages import installed

if TYPE_CHECKING:
    from .voices import VoiceSpec

log = structlog.get_logger("tts.engines")


# --- errors -----------------------------------------------------------------------------------


class SynthesisError(Exception):
    """Base of the errors a caller maps to a response or a stage outcome."""


class EngineUnavailable(SynthesisError):
    """The engine's packages are missing on this worker, or its model does not load."""

    def __init__(self, engine: str, why: str):
        super().__init__(f"the {engine} speech engine is not available on this worker: {why}")
        self.engine = engine


class SpeedOutOfRange(SynthesisError):
    """A speaking rate outside what the engine can do (a permanent error)."""

    def __init__(self, speed: float, engine: Engine):
        super().__init__(
            f"the speaking rate {speed:g} is outside the {engine.name} engine's range "
            f"{engine.min_speed:g} to {engine.max_speed:g}"
        )
        self.speed = speed


# --- audio ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Speech:
    """Mono audio: float32 samples in [-1, 1] at `sample_rate` hertz."""

    samples: np.ndarray
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def wav(self) -> bytes:
        """The audio as a 16-bit PCM mono WAV file."""
        pcm = (np.clip(self.samples, -1.0, 1.0) * 32767).astype("<i2")
        out = io.BytesIO()
        with wave.open(out, "wb") as file:
            file.setnchannels(1)
            file.setsampwidth(2)
            file.setframerate(self.sample_rate)
            file.writeframes(pcm.tobytes())
        return out.getvalue()


# --- the engine interface ---------------------------------------------------------------------


class Engine(ABC):
    """One synthesis engine: its model, loaded on first use, and the voices' synthesis."""

    name: ClassVar[str]
    kind: ClassVar[int]  # a tts_pb2.Engine value
    modules: ClassVar[tuple[str, ...]]  # the packages it needs, checked without importing them
    sample_rate: ClassVar[int]
    min_speed: ClassVar[float] = 1.0
    max_speed: ClassVar[float] = 1.0

    def __init__(self, models_dir: Path, threads: int = 0):
        self.models_dir = models_dir
        self.threads = threads  # for one synthesis; 0: the runtime's default (one per core)
        self._model: Any = None
        # Set when the model failed to load: the failure is kept, not retried on every call (a
        # broken install stays broken), and ListVoices stops offering the engine's voices.
        self.failure: EngineUnavailable | None = None
        self._lock = threading.Lock()

    @classmethod
    def for_config(cls, config: Config) -> Engine:
        """The engine for this worker's configuration (Coqui's also reads the model folder it names)."""
        return cls(config.models_dir, config.tts_threads)

    @classmethod
    def installed(cls) -> bool:
        return installed(*cls.modules)

    @classmethod
    def supports_speed(cls) -> bool:
        return cls.min_speed < cls.max_speed

    def is_loaded(self) -> bool:
        return self._model is not None

    def synthesize(self, text: str, voice: VoiceSpec, speed: float = 1.0) -> Speech:
        """Speak `text` with `voice` (one of this engine's), `speed` times faster than normal.

        Raises SpeedOutOfRange, or EngineUnavailable when the model cannot be loaded.
        """
        if not self.min_speed <= speed <= self.max_speed:
            raise SpeedOutOfRange(speed, self)
        with self._lock:
            if self.failure is not None:
                raise self.failure
            if self._model is None:
                try:
                    self._model = self._load_model()
                except EngineUnavailable as exc:
                    self.failure = exc
                    raise
            samples = self._synthesize(self._model, text.strip(), voice, speed)
        return Speech(np.asarray(samples, dtype=np.float32).ravel(), self.sample_rate)

    def _load_model(self) -> Any:
        if not self.installed():
            raise EngineUnavailable(self.name, f"install the packages {', '.join(self.modules)}")
        # onnxruntime would otherwise write telemetry under ~/.cache.
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        started = time.perf_counter()
        try:
            model = self._load()
        except Exception as exc:  # any failure of a third-party loader means the same to callers
            raise EngineUnavailable(self.name, f"its model does not load: {exc}") from exc
        log.info("tts.model_loaded", engine=self.name, seconds=round(time.perf_counter() - started, 2))
        return model

    @abstractmethod
    def _load(self) -> Any:
        """The loaded model, whatever the engine needs to synthesize."""

    @abstractmethod
    def _synthesize(self, model: Any, text: str, voice: VoiceSpec, speed: float) -> np.ndarray:
        """Mono samples at `sample_rate`, float32 in [-1, 1]."""
