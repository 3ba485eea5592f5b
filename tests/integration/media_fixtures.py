"""Real media files for the media tests, made with the ffmpeg binary (no file is checked in).

`make_samples(folder)` writes every sample once; the `media_samples` fixture
does it per test session. Samples last SAMPLE_SECONDS; tones are a 440 Hz sine.
Used by tests/unit/test_media_*.py and tests/integration/test_media_*.py,
which also use the REST helpers at the end (`Uploads`, `blob_files`).
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
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


# ---------------------------------------------------------------------------- through the edge (integration tests)


@dataclass
class Uploads:
    """A signed-in user's upload calls through Envoy's REST, as a browser makes them."""

    rest: httpx.Client
    headers: dict[str, str]

    def create(self, filename: str, content_type: str, size_bytes: int, request_id: str = "") -> httpx.Response:
        body = {"filename": filename, "contentType": content_type, "sizeBytes": size_bytes, "requestId": request_id}
        return self.rest.post("/v1/uploads", json=body, headers=self.headers)

    def put(self, upload: dict, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        """PUT the bytes to the upload URL, with the headers the upload asks for (or `headers`)."""
        return httpx.put(upload["uploadUrl"], content=body, headers=upload["uploadHeaders"] if headers is None else headers, timeout=30)

    def complete(self, upload_name: str) -> httpx.Response:
        return self.rest.post(f"/v1/{upload_name}:complete", json={}, headers=self.headers)

    def get(self, upload_name: str) -> httpx.Response:
        return self.rest.get(f"/v1/{upload_name}", headers=self.headers)

    def started(self, path: Path, content_type: str, filename: str | None = None) -> dict:
        """A PENDING upload for the file at `path`, nothing sent yet."""
        reply = self.create(filename or path.name, content_type, path.stat().st_size)
        assert reply.status_code == 200, reply.text
        return reply.json()["upload"]

    def sent(self, path: Path, content_type: str, filename: str | None = None) -> dict:
        """An upload whose bytes were PUT, not yet completed."""
        upload = self.started(path, content_type, filename)
        reply = self.put(upload, path.read_bytes())
        assert reply.status_code == 200, reply.text
        return upload


def blob_files(storage_dir: Path, resource_name: str) -> list[Path]:
    """Files in the local blob store that belong to an upload or asset (its id is in their key)."""
    resource_id = resource_name.split("/")[-1]
    return [p for p in storage_dir.rglob("*") if p.is_file() and resource_id in str(p)]


def move_upload_expiry_to_the_past(database_url: str, upload_name: str) -> None:
    """Time travel for an upload's expiry: the media schema's row is the only clock it has."""

    async def update() -> None:
        con = await asyncpg.connect(database_url)
        try:
            await con.execute(
                "UPDATE media.uploads SET expire_time = now() - interval '1 second' WHERE id = $1",
                uuid.UUID(upload_name.split("/")[-1]),
            )
        finally:
            await con.close()

    asyncio.run(update())
