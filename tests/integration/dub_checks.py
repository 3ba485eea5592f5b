"""Measuring a dub: durations, packets, pictures and loudness of downloaded media files.

Used by tests/integration/test_dubbing.py. Media is read with PyAV (demuxing,
video frames) and the ffmpeg binary (audio as mono float PCM).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from services.media.ffmpeg import ffmpeg_exe

LEVEL_RATE = 16000
WINDOW_S = 0.010  # loudness is measured over 10 ms windows


def seconds(value: str | None) -> float:
    """A proto3 JSON Duration ("3.600s"; omitted when zero) in seconds."""
    return float(value.rstrip("s")) if value else 0.0


def words(text: str) -> str:
    """Lowercased words without punctuation, for word error rates."""
    return " ".join(re.sub(r"[^\w']+", " ", text.lower()).split())


def duration(path: Path) -> float:
    """The container's duration in seconds."""
    with av.open(str(path)) as container:
        return container.duration / av.time_base


def format_name(path: Path) -> str:
    """The container format PyAV (libavformat) recognises in the file."""
    with av.open(str(path)) as container:
        return container.format.name


def streams(path: Path) -> list[tuple[str, str, str, bool]]:
    """(type, codec, language, default) of every stream."""
    with av.open(str(path)) as container:
        return [
            (s.type, s.codec_context.name, s.metadata.get("language", ""), bool(s.disposition & av.stream.Disposition.default))
            for s in container.streams
        ]


def video_packets(path: Path) -> list[bytes]:
    """The bytes of every packet of the first video stream, in file order (demuxed, not decoded)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [bytes(packet) for packet in container.demux(stream) if packet.size]


@dataclass
class Frames:
    """Every decoded frame of a video's first stream: presentation times and small grey pictures."""

    times: np.ndarray
    pictures: list[np.ndarray]

    @classmethod
    def of(cls, path: Path) -> Frames:
        times, pictures = [], []
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                times.append(float(frame.time))
                pictures.append(frame.to_ndarray(format="gray")[::2, ::2].astype(np.int16))
        return cls(np.array(times), pictures)

    def index_at(self, t: float) -> int:
        """The frame on screen at time `t`: the last one presented at or before it."""
        return max(0, int(np.searchsorted(self.times, t + 1e-6, side="right")) - 1)

    def at(self, t: float) -> np.ndarray:
        return self.pictures[self.index_at(t)]


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two grey pictures (0 to 255)."""
    return float(np.abs(a - b).mean())


def pcm(path: Path, rate: int = LEVEL_RATE) -> np.ndarray:
    """The first audio stream, decoded to mono float samples at `rate`."""
    done = subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-ac",
            "1",
            "-ar",
            str(rate),
            "-f",
            "f32le",
            "-",
        ],
        capture_output=True,
        check=True,
        timeout=120,
    )
    return np.frombuffer(done.stdout, np.float32)


def levels(samples: np.ndarray, rate: int = LEVEL_RATE) -> np.ndarray:
    """RMS level in dBFS of each consecutive 10 ms window."""
    window = round(rate * WINDOW_S)
    count = len(samples) // window
    rms = np.sqrt((samples[: count * window].reshape(count, window).astype(np.float64) ** 2).mean(axis=1))
    return 20 * np.log10(np.maximum(rms, 1e-10))


def first_loud(level: np.ndarray, start_s: float, threshold_db: float) -> float | None:
    """Time of the first window at or after `start_s` above `threshold_db`; None if none is."""
    first = int(round(start_s / WINDOW_S))
    loud = np.nonzero(level[first:] > threshold_db)[0]
    return (first + int(loud[0])) * WINDOW_S if len(loud) else None


def quietest(level: np.ndarray, start_s: float, end_s: float) -> float:
    """The lowest window level between two times."""
    lo, hi = max(0, int(round(start_s / WINDOW_S))), max(1, int(round(end_s / WINDOW_S)))
    return float(level[lo:hi].min()) if hi > lo else float("inf")


def loudest(level: np.ndarray, start_s: float, end_s: float) -> float:
    lo, hi = max(0, int(round(start_s / WINDOW_S))), int(round(end_s / WINDOW_S))
    return float(level[lo:hi].max()) if hi > lo else float("-inf")
