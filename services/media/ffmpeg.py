"""ffmpeg, the binary from the imageio-ffmpeg wheel, driven through ffmpeg-python.

These calls block for as long as ffmpeg runs (minutes for hours of media):
callers run them in a worker thread. Each writes its output beside the
destination and renames it into place, so a crash never leaves a half-written
file under the final name (stage outputs are overwritten on redelivery).
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import ffmpeg as ffmpeg_python
import imageio_ffmpeg

from octavia_runtime.errors import without_paths

ASR_SAMPLE_RATE = 16000  # what Whisper expects
_STDERR_TAIL_LINES = 15
# Read this far past a limit: a codec's delay and rounding never cut what the limit allows.
_READ_MARGIN_S = 1.0


class FfmpegError(RuntimeError):
    """An ffmpeg step failed; the message says which and ends with the tail of ffmpeg's stderr.

    The message names this machine's files: it is for the log. `reason` is what a user may read.
    """

    def __init__(self, what: str, stderr: bytes | None):
        self.stderr_tail = "\n".join((stderr or b"").decode(errors="replace").strip().splitlines()[-_STDERR_TAIL_LINES:])
        super().__init__(what + (f"; ffmpeg said:\n{self.stderr_tail}" if self.stderr_tail else ""))

    @property
    def reason(self) -> str:
        """ffmpeg's last word on it, with paths cut to their file names (short; for a job's error)."""
        last = self.stderr_tail.splitlines()[-1] if self.stderr_tail else "ffmpeg failed"
        return without_paths(last)[:200]


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (there is no ffmpeg on PATH, and no ffprobe at all)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def default_audio_stream(src: str | os.PathLike) -> int:
    """Index of the audio stream a player would choose: the one marked default, else the first."""
    return _default_audio(src)[0]


def _default_audio(src: str | os.PathLike) -> tuple[int, int]:
    """(index, sample rate) of the default audio stream; the rate is 0 when the header has none."""
    try:
        container = av.open(os.fspath(src), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise FfmpegError(f"{src} is not readable media ({exc})", None) from None
    with container:
        audio = list(container.streams.audio)
        if not audio:
            raise FfmpegError(f"{src} has no audio stream", None)
        marked = [s for s in audio if s.disposition & av.stream.Disposition.default]
        stream = (marked or audio)[0]
        return stream.index, stream.codec_context.sample_rate or 0


def limit_samples(max_seconds: float, sample_rate: int) -> str:
    """Filters that pass at most `max_seconds` of audio, counted in samples at `sample_rate`
    (which they resample to). A cut by timestamps (`-t`, `atrim=end=`) trusts the file:
    squeezed timestamps would let an hour of samples through a one-minute limit."""
    return f"aresample={sample_rate},atrim=end_sample={round(max_seconds * sample_rate)}"


def read_seconds(max_seconds: float) -> str:
    """The input option `-t` that stops reading a file soon after `max_seconds`: by its
    timestamps, so only to save work (`limit_samples` and the callers' cuts are exact)."""
    return f"{max_seconds + _READ_MARGIN_S:.3f}"


def extract_audio(
    src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int = ASR_SAMPLE_RATE, *, max_seconds: float | None = None
) -> None:
    """The default audio stream of `src` as 16-bit mono PCM WAV at `sample_rate` (speech recognition's input),
    at most `max_seconds` of it (the job's paid duration) when given."""
    _run_to_wav(src, dst, f"extracting the audio of {src} failed", sample_rate, max_seconds, ac=1, acodec="pcm_s16le")


def extract_original_audio(src: str | os.PathLike, dst: str | os.PathLike, *, max_seconds: float | None = None) -> None:
    """The default audio stream of `src` as WAV at its own rate and channels (the mix's background),
    at most `max_seconds` of it when given."""
    _run_to_wav(src, dst, f"extracting the original audio of {src} failed", None, max_seconds, acodec="pcm_s16le")


@contextlib.contextmanager
def replacing(dst: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `dst` to write to: renamed onto `dst` when the block ends
    normally, removed when it raises, so `dst` is only ever absent or whole."""
    dst = Path(dst)
    temp = dst.with_name(f".{dst.name}.part")
    try:
        yield temp
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.replace(temp, dst)


def run(args: Sequence[str], what: str, *, stdin: bytes | None = None) -> str:
    """Run ffmpeg with `args` (after its global options) and return its stderr, where
    measuring filters (loudnorm, ebur128) print their results; FfmpegError(`what`) if it fails.
    `stdin` is what ffmpeg reads as the input `pipe:0`.

    For commands whose stream mapping and per-stream options read more plainly as
    ffmpeg's own arguments than as an ffmpeg-python graph."""
    done = subprocess.run(
        [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-y", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        raise FfmpegError(what, done.stderr)
    return done.stderr.decode(errors="replace")


def _run_to_wav(
    src: str | os.PathLike, dst: str | os.PathLike, what: str, sample_rate: int | None, max_seconds: float | None, **options
) -> None:
    stream, source_rate = _default_audio(src)
    if sample_rate:
        options["ar"] = sample_rate
    limit: dict[str, str] = {}
    if max_seconds is not None:
        rate = sample_rate or source_rate
        if not rate:
            raise FfmpegError(f"{src}: its audio stream has no sample rate to count a limit in", None)
        limit["t"] = read_seconds(max_seconds)
        options["af"] = limit_samples(max_seconds, rate)
    with replacing(dst) as temp:
        try:
            (
                ffmpeg_python.input(os.fspath(src), **limit)
                # RF64 past 4 GiB, where a plain WAV header overflows (hours of multichannel audio).
                .output(os.fspath(temp), map=f"0:{stream}", format="wav", rf64="auto", map_metadata=-1, **options)
                .global_args("-nostdin", "-hide_banner")
                .overwrite_output()
                .run(cmd=ffmpeg_exe(), quiet=True)
            )
        except ffmpeg_python.Error as exc:
            raise FfmpegError(what, exc.stderr) from None
