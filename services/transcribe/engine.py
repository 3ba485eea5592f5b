"""Speech recognition with faster-whisper: models loaded once per process, transcripts as protobuf.

Everything here is synchronous and CPU-heavy: callers run it off the event
loop (`await asyncio.to_thread(transcriber.transcribe, path, ...)`). The
callbacks `on_progress` and `should_stop` are therefore called from that
worker thread: they must be thread-safe (a `threading.Event.is_set`, a
`loop.call_soon_threadsafe`).
"""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import structlog
from google.protobuf import duration_pb2
from octavia.transcribe.v1 import transcribe_pb2

from octavia_runtime.config import Config, ConfigError
from octavia_runtime.shared import once

from .models import CATALOGUE, MODELS, ModelAssemblyError, ModelSpec, available, size_bytes

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = structlog.get_logger("transcribe.engine")

DEVICE = "cpu"
COMPUTE_TYPE = "int8"
SAMPLE_RATE = 16000  # what Whisper listens at; decode_audio resamples to it
# Whisper's own code for Javanese predates BCP-47's `jv`.
_WHISPER_ALIASES = {"jv": "jw"}

ProgressCallback = Callable[[float, float], None]
StopCheck = Callable[[], bool]


class TranscriptionError(Exception):
    """Base of the errors a caller maps to a response or a stage outcome."""


class UnknownModel(TranscriptionError):
    """No model of that name in the catalogue (a permanent error)."""

    def __init__(self, name: str):
        super().__init__(f"unknown speech recognition model {name!r}; known models: {', '.join(CATALOGUE)}")
        self.model = name


class ModelUnavailable(TranscriptionError):
    """A known model whose files are not installed on this worker, or could not be made ready."""

    def __init__(self, name: str, why: str):
        super().__init__(f"the speech recognition model {name!r} is not available on this worker: {why}")
        self.model = name


class UnsupportedLanguage(TranscriptionError):
    """The model does not recognise the requested language (a permanent error)."""

    def __init__(self, language: str, model: str):
        super().__init__(f"the model {model!r} does not recognise the language {language!r}")
        self.language = language
        self.model = model


class AudioUnreadable(TranscriptionError):
    """The input does not decode as audio, or holds none (a permanent error)."""


class AudioTooLong(TranscriptionError):
    """The audio is longer than the caller allows."""

    def __init__(self, duration_s: float, limit_s: float):
        super().__init__(f"the audio lasts {duration_s:.1f} s, more than the {limit_s:g} s allowed")
        self.duration_s = duration_s
        self.limit_s = limit_s


class TranscriptionCancelled(TranscriptionError):
    """`should_stop()` returned True between two segments."""


def whisper_language(tag: str) -> str:
    """The Whisper code of a BCP-47 tag: its primary subtag, lower-cased (`en-US` -> `en`)."""
    primary = tag.strip().replace("_", "-").split("-", 1)[0].lower()
    return _WHISPER_ALIASES.get(primary, primary)


def _duration(seconds: float) -> duration_pb2.Duration:
    value = duration_pb2.Duration()
    value.FromMilliseconds(round(max(seconds, 0.0) * 1000))
    return value


class Transcriber:
    """The models of this process: each loaded once, on first use, and kept.

    Thread-safe: several threads may transcribe at once (CTranslate2 queues
    the work of one model), and a model is loaded by one thread only.
    """

    device = DEVICE
    compute_type = COMPUTE_TYPE

    def __init__(self, config: Config, *, cpu_threads: int | None = None):
        if config.whisper_model not in CATALOGUE:
            raise ConfigError(
                f"OCTAVIA_WHISPER_MODEL={config.whisper_model!r} is not a known model (one of {', '.join(CATALOGUE)})"
            )
        self.models_dir = config.models_dir
        self.default_model = config.whisper_model
        self.cpu_threads = cpu_threads or os.cpu_count() or 1
        self._loaded: dict[str, WhisperModel] = {}
        self._locks = {name: threading.Lock() for name in CATALOGUE}

    # --- the catalogue ---------------------------------------------------------------------------

    def spec(self, name: str = "") -> ModelSpec:
        """The model called `name` (empty: the default); UnknownModel otherwise."""
        try:
            return CATALOGUE[name or self.default_model]
        except KeyError:
            raise UnknownModel(name) from None

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def models(self) -> list[transcribe_pb2.Model]:
        """Every catalogue model, with whether this worker has it, has loaded it, and uses it by default."""
        return [
            transcribe_pb2.Model(
                name=spec.name,
                languages=spec.languages(),
                multilingual=spec.multilingual,
                available=available(spec),
                loaded=self.is_loaded(spec.name),
                is_default=spec.name == self.default_model,
                size_bytes=size_bytes(spec),
            )
            for spec in MODELS
        ]

    def load(self, name: str = "") -> WhisperModel:
        """The loaded model (loading it on first use); UnknownModel or ModelUnavailable otherwise."""
        spec = self.spec(name)
        model = self._loaded.get(spec.name)
        if model is not None:
            return model
        with self._locks[spec.name]:
            model = self._loaded.get(spec.name)
            if model is None:
                model = self._loaded[spec.name] = self._load(spec)
        return model

    def _load(self, spec: ModelSpec) -> WhisperModel:
        if not available(spec):
            raise ModelUnavailable(spec.name, f"install the packages {', '.join(spec.modules)}")
        started = time.perf_counter()
        try:
            folder = spec.folder(self.models_dir)
        except ModelAssemblyError as exc:
            raise ModelUnavailable(spec.name, str(exc)) from exc
        from faster_whisper import WhisperModel

        model = WhisperModel(str(folder), device=DEVICE, compute_type=COMPUTE_TYPE, cpu_threads=self.cpu_threads)
        log.info("transcribe.model_loaded", model=spec.name, folder=str(folder), seconds=round(time.perf_counter() - started, 2))
        return model

    def check_language(self, language: str, model: str = "") -> str:
        """The Whisper code for `language` (empty: detect) if `model` recognises it; UnsupportedLanguage otherwise."""
        spec = self.spec(model)
        if not language.strip():
            return ""
        code = whisper_language(language)
        if code not in spec.languages():
            raise UnsupportedLanguage(language, spec.name)
        return code

    # --- transcription ---------------------------------------------------------------------------

    def transcribe(
        self,
        audio_path: str | os.PathLike[str],
        *,
        model: str = "",
        language: str = "",
        word_timestamps: bool = True,
        vad_filter: bool = True,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> transcribe_pb2.Transcript:
        """Transcribe a media file (any format ffmpeg decodes; video files use their first audio stream).

        `language` empty means detect it; `vad_filter` (on by default) skips non-speech.
        `on_progress(seconds_done, total_seconds)` is called after each segment;
        `should_stop()` is checked before the work and between segments, and raises
        TranscriptionCancelled when it returns True.
        Raises UnknownModel, ModelUnavailable, UnsupportedLanguage, AudioUnreadable.
        """
        spec = self.spec(model)
        code = self.check_language(language, spec.name)
        self.load(spec.name)  # a missing model fails before a long file is decoded
        samples = mapped_pcm(Path(audio_path))
        if samples is None:
            samples = decode(Path(audio_path))
        return self._run(spec, samples, code, word_timestamps, vad_filter, on_progress, should_stop)

    def transcribe_clip(
        self,
        content: bytes,
        *,
        model: str = "",
        language: str = "",
        word_timestamps: bool = True,
        max_duration_s: float | None = None,
        should_stop: StopCheck | None = None,
    ) -> transcribe_pb2.Transcript:
        """Transcribe audio given as bytes; AudioTooLong when it lasts more than `max_duration_s`."""
        spec = self.spec(model)
        code = self.check_language(language, spec.name)
        self.load(spec.name)
        samples = decode(io.BytesIO(content), max_duration_s=max_duration_s)
        return self._run(spec, samples, code, word_timestamps, True, None, should_stop)

    def _run(
        self,
        spec: ModelSpec,
        samples: np.ndarray,
        language: str,
        word_timestamps: bool,
        vad_filter: bool,
        on_progress: ProgressCallback | None,
        should_stop: StopCheck | None,
    ) -> transcribe_pb2.Transcript:
        whisper = self.load(spec.name)
        if should_stop is not None and should_stop():
            raise TranscriptionCancelled("stopped before transcription started")
        total = len(samples) / SAMPLE_RATE
        transcript = transcribe_pb2.Transcript(duration=_duration(total), model=spec.name)
        previous: tuple[str, float, float] = ("", 0.0, 0.0)  # text, start, end of the last segment kept
        for offset, chunk in chunks(samples):
            if chunk.dtype == np.int16:  # mapped from a WAV file: only this chunk comes into memory
                chunk = chunk.astype(np.float32) / 32768.0
            segments, info = whisper.transcribe(
                chunk,
                # Detected on the first chunk, then kept: one language per file.
                language=language or transcript.language or None,
                # VAD skips silence and music: faster, and fewer words invented in quiet stretches.
                vad_filter=vad_filter,
                word_timestamps=word_timestamps,
            )
            if not transcript.language:
                transcript.language = info.language
                # faster-whisper reports 1 when the language was given, as the API promises.
                transcript.language_probability = float(info.language_probability)
            try:
                # `segments` is a generator: each step decodes the next stretch of audio.
                for segment in segments:
                    text = segment.text.strip()
                    start = min(max(offset + float(segment.start), previous[2]), total)
                    end = min(max(offset + float(segment.end), start), total)
                    if text and is_speech(text, start, end, previous):
                        _append_segment(transcript, segment, text, start, end, offset)
                        previous = (text, start, end)
                    elif text:
                        log.info("transcribe.segment_dropped", text=text[:80], start=round(start, 2), end=round(end, 2))
                    if on_progress is not None:
                        on_progress(min(offset + float(segment.end), total), total)
                    if should_stop is not None and should_stop():
                        raise TranscriptionCancelled(f"stopped after {offset + segment.end:.1f} s of {total:.1f} s")
            finally:
                close = getattr(segments, "close", None)
                if close is not None:  # stop decoding when cancelled or failed
                    close()
        if on_progress is not None:
            on_progress(total, total)
        return transcript


SAMPLE_RATE = 16000
# Whisper's feature extraction holds several copies of the spectrogram of all it is given:
# about 50 MB per minute. Feeding it a minute at a time keeps a worker's peak memory the
# same for a 10-minute file as for a 1-minute one.
CHUNK_S = 60.0
CUT_SEARCH_S = 10.0  # a chunk ends at the quietest moment of its last seconds, not mid-word
CUT_FRAME_S = 0.1


def chunks(samples: np.ndarray, rate: int = SAMPLE_RATE) -> Iterator[tuple[float, np.ndarray]]:
    """(start in seconds, samples) of consecutive pieces of about CHUNK_S, cut where it is quietest."""
    window, search, frame = int(CHUNK_S * rate), int(CUT_SEARCH_S * rate), int(CUT_FRAME_S * rate)
    start = 0
    while start < len(samples):
        end = min(len(samples), start + window)
        if end < len(samples) and len(samples) - start > window + search:
            tail = samples[end - search : end].astype(np.float32)
            energy = np.square(tail[: len(tail) // frame * frame].reshape(-1, frame)).mean(axis=1)
            end = end - search + int(np.argmin(energy)) * frame + frame // 2
        yield start / rate, samples[start:end]
        start = end


# Less time than this for a segment of words is not speech: Whisper placed text where no audio is left.
MIN_SEGMENT_S = 0.1


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text).split()


def is_speech(text: str, start: float, end: float, previous: tuple[str, float, float]) -> bool:
    """Whether a segment (times already clamped after the previous one) can be real speech.

    Whisper sometimes repeats the last sentence of a window, squeezed into the
    little audio left after it (seen on synthetic English: the last sentence
    twice, the copy in the final half second). A repeat said again by the
    speaker takes about as long as the first time; a copy in under half that
    time, or a segment with no time at all, is dropped.
    """
    if end - start < MIN_SEGMENT_S:
        return False
    previous_text, previous_start, previous_end = previous
    return not (_words(text) == _words(previous_text) and end - start < (previous_end - previous_start) / 2)


def _append_segment(
    transcript: transcribe_pb2.Transcript, segment, text: str, start: float, end: float, offset: float = 0.0
) -> None:
    """Add one segment, its words clamped inside it so they keep time order without overlaps."""
    out = transcript.segments.add(
        index=len(transcript.segments),
        start_offset=_duration(start),
        end_offset=_duration(end),
        text=text,
        avg_logprob=float(segment.avg_logprob),
        no_speech_probability=float(segment.no_speech_prob),
    )
    word_end = start
    for word in segment.words or ():
        word_text = word.word.strip()
        if not word_text:
            continue
        w_start = min(max(offset + float(word.start), word_end), end)
        w_end = min(max(offset + float(word.end), w_start), end)
        out.words.add(
            text=word_text, start_offset=_duration(w_start), end_offset=_duration(w_end), probability=float(word.probability)
        )
        word_end = w_end


def mapped_pcm(path: Path) -> np.ndarray | None:
    """The samples of a 16 kHz mono 16-bit PCM WAV (what extract_audio writes), mapped from the
    file rather than read: a long file costs no memory until a chunk of it is used. None for
    anything else (decode() reads those)."""
    try:
        with path.open("rb") as f:
            riff = f.read(12)
            if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
                return None
            fmt = None
            while header := f.read(8):
                if len(header) < 8:
                    return None
                kind, size = header[:4], int.from_bytes(header[4:], "little")
                if kind == b"fmt ":
                    fmt = f.read(size)
                    if size % 2:
                        f.read(1)
                elif kind == b"data":
                    if fmt is None or len(fmt) < 16:
                        return None
                    codec, channels, rate = (int.from_bytes(fmt[i:j], "little") for i, j in ((0, 2), (2, 4), (4, 8)))
                    bits = int.from_bytes(fmt[14:16], "little")
                    if (codec, channels, rate, bits) != (1, 1, SAMPLE_RATE, 16):
                        return None
                    count = min(size, path.stat().st_size - f.tell()) // 2
                    return np.memmap(path, dtype="<i2", mode="r", offset=f.tell(), shape=(count,))
                else:
                    f.seek(size + size % 2, 1)
    except OSError:
        return None
    return None


def decode(source: Path | BinaryIO, *, max_duration_s: float | None = None) -> np.ndarray:
    """Mono 16 kHz float samples of `source`; AudioUnreadable, or AudioTooLong past `max_duration_s`."""
    import av
    from faster_whisper import decode_audio

    if max_duration_s is not None:
        # Refuse a long input from its header before decoding all of it, when the container says.
        try:
            with av.open(str(source) if isinstance(source, Path) else source, mode="r", metadata_errors="ignore") as container:
                declared = container.duration / 1_000_000 if container.duration else None
        except Exception as exc:  # noqa: BLE001 - PyAV raises many kinds for input that is not media
            raise AudioUnreadable(f"the input does not decode as audio: {exc}") from exc
        if declared is not None and declared > max_duration_s + 0.5:
            raise AudioTooLong(declared, max_duration_s)
        if not isinstance(source, Path):
            source.seek(0)
    try:
        samples = decode_audio(str(source) if isinstance(source, Path) else source, sampling_rate=SAMPLE_RATE)
    except FileNotFoundError as exc:
        raise AudioUnreadable(f"no such file: {source}") from exc
    except Exception as exc:  # noqa: BLE001 - as above: no audio stream, corrupt data, unknown format
        raise AudioUnreadable(f"the input does not decode as audio: {exc}") from exc
    if samples.size == 0:
        raise AudioUnreadable("the input holds no audio")
    duration = samples.size / SAMPLE_RATE
    if max_duration_s is not None and duration > max_duration_s:
        raise AudioTooLong(duration, max_duration_s)
    return samples


def shared_transcriber(config: Config) -> Transcriber:
    """The process's one Transcriber for this configuration, so the API and the stage worker share its models."""
    return once(("transcriber", config.models_dir, config.whisper_model), lambda: Transcriber(config))
