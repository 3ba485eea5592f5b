"""Real media files for the media tests, made with the ffmpeg binary (no file is checked in).

`make_samples(folder)` writes every sample once; the `media_samples` fixture
does it per test session. Samples last SAMPLE_SECONDS; tones are a 440 Hz sine.
Used by tests/unit/test_media_*.py and tests/integration/test_media_*.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from services.media.ffmpeg import ffmpeg_exe

SAMPLE_SECONDS = 2
_SINE = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={SAMPLE_SECONDS}"]
_STEREO_48K = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SAMPLE_SECONDS}", "-ac", "2"]
_PICTURE = ["-f", "lavfi", "-i", f"testsrc=duration={SAMPLE_SECONDS}:size=160x120:rate=25"]
_H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "ultrafast"]

# name -> ffmpeg arguments between the global options and the output file.
RECIPES: dict[str, list[str]] = {
    # One tone per accepted container (services/media/probe.py ACCEPTED_CONTAINERS).
    "tone.mp3": [*_SINE, "-c:a", "libmp3lame"],
    "tone.wav": [*_SINE, "-c:a", "pcm_s16le"],
    "tone.aac": [*_SINE, "-c:a", "aac"],
    "tone.flac": [*_SINE, "-c:a", "flac"],
    "tone.ogg": [*_SINE, "-c:a", "libvorbis"],
    "tone.opus": [*_SINE, "-c:a", "libopus"],
    "tone.mp4": [*_SINE, "-c:a", "aac"],
    "tone.m4a": [*_SINE, "-c:a", "aac"],
    "tone.mov": [*_SINE, "-c:a", "aac"],
    "tone.mkv": [*_SINE, "-c:a", "libvorbis"],
    "tone.webm": [*_SINE, "-c:a", "libopus"],
    "stereo48k.m4a": [*_STEREO_48K, "-c:a", "aac"],
    "silence.wav": ["-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", str(SAMPLE_SECONDS), "-c:a", "pcm_s16le"],
    # Video: with sound, with its index at the front (+faststart), without sound, in a refused container.
    "video.mp4": [*_PICTURE, *_SINE, *_H264, "-c:a", "aac", "-shortest"],
    "video_faststart.mp4": [*_PICTURE, *_SINE, *_H264, "-c:a", "aac", "-shortest", "-movflags", "+faststart"],
    "video_no_audio.mp4": [*_PICTURE, *_H264],
    "video.avi": [*_PICTURE, *_SINE, "-c:v", "mpeg4", "-c:a", "libmp3lame", "-shortest"],
}
# Written to a pipe, as a browser's MediaRecorder streams it: no duration, no index in the file.
STREAMED = {"recorded.webm": [*_SINE, "-c:a", "libopus", "-f", "webm"]}
TRUNCATE_AT = 0.3  # the part of a file that "arrived" in the truncated samples


def make_samples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    for name, args in RECIPES.items():
        subprocess.run([*base, *args, str(folder / name)], check=True, timeout=120)
    for name, args in STREAMED.items():
        done = subprocess.run([*base, *args, "pipe:1"], check=True, timeout=120, capture_output=True)
        (folder / name).write_bytes(done.stdout)
    for name in ("video.mp4", "video_faststart.mp4"):
        data = (folder / name).read_bytes()
        (folder / f"truncated_{name}").write_bytes(data[: int(len(data) * TRUNCATE_AT)])
    (folder / "text.mp4").write_text("This is a text file with a video's name.\n" * 50)
    return folder


@pytest.fixture(scope="session")
def media_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding every sample of RECIPES and STREAMED, plus truncated_<video> and text.mp4."""
    return make_samples(tmp_path_factory.mktemp("media-samples"))
