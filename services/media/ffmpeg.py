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

ASR_SAMPLE_RATE = 16000  # what Whisper expects
_STDERR_TAIL_LINES = 15


class FfmpegError(RuntimeError):
    """An ffmpeg step failed; the message says which and ends with the tail of ffmpeg's stderr."""

    def __init__(self, what: str, stderr: bytes | None):
        self.stderr_tail = "\n".join((stderr or b"").decode(errors="replace").strip().splitlines()[-_STDERR_TAIL_LINES:])
        super().__init__(what + (f"; ffmpeg said:\n{self.stderr_tail}" if self.stderr_tail else ""))


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary (there is no ffmpeg on PATH, and no ffprobe at all)."""
    return imageio_ffmpeg.get_ffmpeg_exe()


def default_audio_stream(src: str | os.PathLike) -> int:
    """Index of the audio stream a player would choose: the one marked default, else the first."""
    try:
        container = av.open(os.fspath(src), metadata_errors="ignore")
    except av.FFmpegError as exc:
        raise FfmpegError(f"{src} is not readable media ({exc})", None) from None
    with container:
        audio = list(container.streams.audio)
        if not audio:
            raise FfmpegError(f"{src} has no audio stream", None)
        marked = [s for s in audio if s.disposition & av.stream.Disposition.default]
        return (marked or audio)[0].index


def extract_audio(src: str | os.PathLike, dst: str | os.PathLike, sample_rate: int = ASR_SAMPLE_RATE) -> None:
    """The default audio stream of `src` as 16-bit mono PCM WAV at `sample_rate` (speech recognition's input)."""
    _run_to_wav(src, dst, f"extracting the audio of {src} failed", ac=1, ar=sample_rate, acodec="pcm_s16le")


def extract_original_audio(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """The default audio stream of `src` as WAV at its own rate and channels (the mix's background)."""
    _run_to_wav(src, dst, f"extracting the original audio of {src} failed", acodec="pcm_s16le")


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


def _run_to_wav(src: str | os.PathLike, dst: str | os.PathLike, what: str, **options) -> None:
    stream = default_audio_stream(src)
    with replacing(dst) as temp:
        try:
            (
                ffmpeg_python.input(os.fspath(src))
                # RF64 past 4 GiB, where a plain WAV header overflows (hours of multichannel audio).
                .output(os.fspath(temp), map=f"0:{stream}", format="wav", rf64="auto", map_metadata=-1, **options)
                .global_args("-nostdin", "-hide_banner")
                .overwrite_output()
                .run(cmd=ffmpeg_exe(), quiet=True)
            )
        except ffmpeg_python.Error as exc:
            raise FfmpegError(what, exc.stderr) from None
