"""Coqui TTS: a model an operator brings, from the folder OCTAVIA_COQUI_MODEL_DIR names.

Optional twice over: the `coqui` extra installs the package (coqui-tts, whose
module is `TTS`), and the operator names a folder as Coqui's trainer writes
it: `config.json` and a checkpoint (`model.pth`, else `best_model.pth`, else
the latest `checkpoint_<step>.pth`). Without either there is no Coqui voice
and nothing else changes. A worker speaks with one Coqui model, single
speaker and single language.

The folder's `config.json` is read when the engines are built: it says what
ListVoices shows before anything loads (language, sample rate, whether the
speaking rate can change), and a folder that is missing or unusable is
reported then, in the log and as the engine's failure. The language is the
config's own: the first dataset's `language`, else `phoneme_language`; a
config that names neither (a character-based model may not) is refused with
a message saying to set `phoneme_language` to the BCP-47 tag it speaks.
The model itself loads on first use, like every engine's, with Coqui's
`Synthesizer` from those two files (no model manager, no network).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import structlog
from octavia.tts.v1 import tts_pb2

from octavia_runtime.config import Config

from .engine import Engine, EngineUnavailable

if TYPE_CHECKING:
    from .voices import VoiceSpec

log = structlog.get_logger("tts.coqui")

_CHECKPOINTS = ("model.pth", "best_model.pth")  # then the latest checkpoint_<step>.pth
_SPEEDS = (0.5, 2.0)  # length_scale = base / speed, as Piper's; past these the voice slurs or drags


@dataclass(frozen=True)
class CoquiModel:
    """A model folder as its config.json describes it, read without loading the model."""

    folder: Path
    config_path: Path
    checkpoint: Path
    language: str  # BCP-47
    sample_rate: int
    length_scale: float | None  # the model's own; None when its speaking rate cannot change

    @classmethod
    def read(cls, folder: Path) -> CoquiModel:
        """The model in `folder`; EngineUnavailable saying what is wrong with the folder otherwise."""
        if not folder.is_dir():
            raise _unusable(folder, "it is not a folder")
        config_path = folder / "config.json"
        try:
            config = json.loads(config_path.read_text())
            audio = config["audio"]
            sample_rate = int(audio.get("output_sample_rate") or audio["sample_rate"])
            language = _language(config)
            scale = (config.get("model_args") or {}).get("length_scale", config.get("length_scale"))
            length_scale = float(scale) if scale else None
        except FileNotFoundError:
            raise _unusable(folder, "it has no config.json") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise _unusable(folder, f"its config.json is not a Coqui model config ({exc!r})") from None
        if not language:
            raise _unusable(folder, "its config.json names no language: set phoneme_language to the BCP-47 tag it speaks")
        return cls(folder, config_path, _checkpoint(folder), language, sample_rate, length_scale)


class CoquiEngine(Engine):
    """The Coqui model of this worker's configuration, through Coqui's `Synthesizer`.

    The configured model is the class's (`configure`, called when the engines
    are built): the voice catalogue and ListVoices read the sample rate and
    speaking rates from the engine type, and a worker has one configuration.
    """

    name = "coqui"
    kind = tts_pb2.ENGINE_COQUI
    modules = ("TTS",)
    sample_rate = 22050  # the configured model's, set by `configure`
    configured: ClassVar[CoquiModel | None] = None
    problem: ClassVar[EngineUnavailable | None] = None  # why the configured folder is unusable

    def __init__(self, models_dir: Path, threads: int = 0):
        super().__init__(models_dir, threads)
        self.failure = self.problem

    @classmethod
    def for_config(cls, config: Config) -> Engine:
        cls.configure(config.coqui_model_dir)
        return cls(config.models_dir, config.tts_threads)

    @classmethod
    def configure(cls, folder: str) -> None:
        """Reads the model folder `folder` names ("": none), replacing what a previous configuration set."""
        cls.configured, cls.problem = None, None
        cls.min_speed = cls.max_speed = 1.0
        if not folder:
            return
        try:
            cls.configured = CoquiModel.read(Path(folder).expanduser())
        except EngineUnavailable as exc:
            cls.problem = exc
            log.warning("tts.coqui_model_unusable", folder=folder, error=str(exc))
            return
        cls.sample_rate = cls.configured.sample_rate
        if cls.configured.length_scale is not None:
            cls.min_speed, cls.max_speed = _SPEEDS
        if not super().installed():
            log.warning("tts.coqui_not_installed", folder=folder, hint="install Octavia's coqui extra")

    @classmethod
    def installed(cls) -> bool:
        return cls.configured is not None and super().installed()

    def _load(self) -> Any:
        from TTS.utils.synthesizer import Synthesizer

        model = self.configured
        if model is None:
            raise ValueError("no Coqui model folder is configured (OCTAVIA_COQUI_MODEL_DIR)")
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        synthesizer = Synthesizer(tts_checkpoint=model.checkpoint, tts_config_path=model.config_path)
        if synthesizer.output_sample_rate != model.sample_rate:
            raise ValueError(f"it speaks at {synthesizer.output_sample_rate} Hz, not the {model.sample_rate} of its config")
        if getattr(synthesizer.tts_model, "num_speakers", 0) > 1:
            raise ValueError(f"it has {synthesizer.tts_model.num_speakers} speakers; Octavia speaks with single-speaker models")
        if model.length_scale is not None and not hasattr(synthesizer.tts_model, "length_scale"):
            raise ValueError(f"its config sets length_scale but its {type(synthesizer.tts_model).__name__} model has none")
        return synthesizer

    def _synthesize(self, model: Any, text: str, voice: VoiceSpec, speed: float) -> np.ndarray:
        from TTS.utils.synthesizer import PAD_SILENCE_SAMPLES

        configured = self.configured
        assert configured is not None, "_load found a configured model"
        if configured.length_scale is not None:
            model.tts_model.length_scale = configured.length_scale / speed
        samples = np.asarray(model.tts(text), dtype=np.float32)
        # The Synthesizer pads every sentence with silence, the last one too: a dubbed segment's
        # speech must end where the voice does.
        return np.clip(samples[: max(len(samples) - PAD_SILENCE_SAMPLES, 0)], -1.0, 1.0)


def _language(config: dict[str, Any]) -> str:
    """The BCP-47 tag Coqui's config gives (`en-us` becomes `en-US`), or ""."""
    datasets = config.get("datasets") or [{}]
    tag = str(datasets[0].get("language") or config.get("phoneme_language") or "").strip().replace("_", "-")
    primary, _, region = tag.partition("-")
    return f"{primary.lower()}-{region.upper()}" if len(region) == 2 else tag.lower()


def _checkpoint(folder: Path) -> Path:
    for name in _CHECKPOINTS:
        if (folder / name).is_file():
            return folder / name
    steps = {
        int(m[1]): path for path in folder.glob("checkpoint_*.pth") if (m := re.fullmatch(r"checkpoint_(\d+)\.pth", path.name))
    }
    if not steps:
        raise _unusable(folder, f"it has no checkpoint ({', '.join(_CHECKPOINTS)} or checkpoint_<step>.pth)")
    return steps[max(steps)]


def _unusable(folder: Path, why: str) -> EngineUnavailable:
    return EngineUnavailable(CoquiEngine.name, f"the Coqui model folder {folder} (OCTAVIA_COQUI_MODEL_DIR) is unusable: {why}")
