"""Real media files for the media tests, made with the ffmpeg binary (no file is checked in).

`make_samples(folder)` writes every sample once; the `media_samples` fixture
does it per test session. Samples last SAMPLE_SECONDS; tones are a 440 Hz sine.
`make_lying_samples(folder)` (fixture `lying_samples`) writes files whose
header says they last CLAIMED_SECONDS while they hold REAL_SECONDS.
Used by tests/unit/test_media_*.py and tests/integration/test_media_*.py,
which also use the REST helpers at the end (`Uploads`, `blob_files`).
tests/conftest.py registers this module as a plugin, so tests ask for its
fixtures by name without importing them.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import asyncpg
import av
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


# ---------------------------------------------------------------------------- files whose header lies about their length

REAL_SECONDS = 60
CLAIMED_SECONDS = 1
_LONG_SINE = ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={REAL_SECONDS}"]
_LONG_PICTURE = ["-f", "lavfi", "-i", f"testsrc=duration={REAL_SECONDS}:size=160x120:rate=25"]
# The honest files the lying ones are made from, by name of the lying one.
_LYING_SOURCES: dict[str, list[str]] = {
    "lying.mkv": [*_LONG_SINE, "-c:a", "libvorbis"],
    "lying.webm": [*_LONG_SINE, "-c:a", "libopus"],
    "lying.m4a": [*_LONG_SINE, "-c:a", "aac"],
    "lying_video.mp4": [*_LONG_PICTURE, *_LONG_SINE, *_H264, "-c:a", "aac", "-shortest"],
    "lying.flac": [*_LONG_SINE, "-c:a", "flac"],
    "lying.mp3": [*_LONG_SINE, "-c:a", "libmp3lame"],
}


def make_lying_samples(folder: Path) -> Path:
    """Each of _LYING_SOURCES with its header's duration set to CLAIMED_SECONDS, and:

    - chained.opus: REAL_SECONDS one-second Ogg links end to end; the header (the last
      page) says 1 s and each link's clock starts again at 0;
    - overclaiming.mkv: SAMPLE_SECONDS of sound whose header promises REAL_SECONDS
      (a file cut short);
    - squeezed.mkv: REAL_SECONDS of sound on timestamps twenty times too close, so its
      packets themselves say 3 s: only what the stages produce can be held to the price.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = [ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    edits = {".mkv": claim_matroska_duration, ".webm": claim_matroska_duration, ".m4a": claim_mp4_duration,
             ".mp4": claim_mp4_duration, ".flac": claim_flac_duration, ".mp3": claim_mp3_duration}  # fmt: skip
    for name, args in _LYING_SOURCES.items():
        honest = folder / f"honest_{name}"
        subprocess.run([*base, *args, str(honest)], check=True, timeout=120)
        (folder / name).write_bytes(edits[honest.suffix](honest.read_bytes(), CLAIMED_SECONDS))
    link = folder / "link.opus"
    subprocess.run(
        [*base, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1", "-c:a", "libopus", str(link)], check=True
    )
    (folder / "chained.opus").write_bytes(link.read_bytes() * REAL_SECONDS)
    short = folder / "short.mkv"
    subprocess.run([*base, *_SINE, "-c:a", "libvorbis", str(short)], check=True, timeout=120)
    (folder / "overclaiming.mkv").write_bytes(claim_matroska_duration(short.read_bytes(), REAL_SECONDS))
    squeeze = ["-itsscale", "0.05", "-i", str(folder / "honest_lying.mkv"), "-c", "copy"]
    subprocess.run([*base, *squeeze, str(folder / "squeezed.mkv")], check=True, timeout=120)
    return folder


@pytest.fixture(scope="session")
def lying_samples(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the files of make_lying_samples (and the honest ones they were made from)."""
    return make_lying_samples(tmp_path_factory.mktemp("lying-samples"))


def claim_matroska_duration(data: bytes, seconds: float) -> bytes:
    """A Matroska or WebM file with its Segment Info Duration element set to `seconds`."""
    out = bytearray(data)
    at = out.index(b"\x44\x89")  # the Duration element's id
    size = out[at + 2] & 0x7F
    assert out[at + 2] & 0x80 and size in (4, 8), "a one-byte size of a 4- or 8-byte float"
    scale = 1_000_000  # TimecodeScale: ffmpeg writes the default, 1 ms
    out[at + 3 : at + 3 + size] = struct.pack(">d" if size == 8 else ">f", seconds * 1e9 / scale)
    return bytes(out)


def claim_mp4_duration(data: bytes, seconds: float) -> bytes:
    """An MP4 with the movie's (mvhd), every track's (tkhd) and every media's (mdhd) duration
    set to `seconds`. The sample tables, which time the packets, are left as they are."""
    out = bytearray(data)
    mvhd = out.index(b"mvhd")
    movie_scale = struct.unpack(">I", out[mvhd + 16 : mvhd + 20])[0]
    for box in (b"mvhd", b"tkhd", b"mdhd"):
        at = out.find(box)
        while at >= 0:
            assert out[at + 4] == 0, "version 0 boxes (32-bit times), as ffmpeg writes short files"
            if box == b"tkhd":  # version/flags, creation, modification, track id, reserved, duration
                field, scale = at + 24, movie_scale
            else:  # version/flags, creation, modification, time scale, duration
                field, scale = at + 20, struct.unpack(">I", out[at + 16 : at + 20])[0]
            out[field : field + 4] = struct.pack(">I", round(seconds * scale))
            at = out.find(box, at + 4)
    return bytes(out)


def claim_flac_duration(data: bytes, seconds: float) -> bytes:
    """A FLAC file whose STREAMINFO counts `seconds` of samples."""
    out = bytearray(data)
    assert out[:4] == b"fLaC" and out[4] & 0x7F == 0, "STREAMINFO first"
    # STREAMINFO from byte 8: block and frame sizes (10 bytes), then 64 bits of
    # sample rate (20), channels (3), bits per sample (5), total samples (36).
    packed = int.from_bytes(out[18:26], "big")
    rate = packed >> 44
    packed = (packed >> 36 << 36) | round(seconds * rate)
    out[18:26] = packed.to_bytes(8, "big")
    return bytes(out)


def claim_mp3_duration(data: bytes, seconds: float) -> bytes:
    """An MP3 whose Xing/Info header counts `seconds` of frames (1152 samples at 44.1 kHz)."""
    out = bytearray(data)
    at = out.find(b"Info")
    at = at if at >= 0 else out.index(b"Xing")
    assert struct.unpack(">I", out[at + 4 : at + 8])[0] & 1, "the frame count is present"
    out[at + 8 : at + 12] = struct.pack(">I", round(seconds * 44100 / 1152))
    return bytes(out)


def with_a_gap(src: Path, dst: Path, gap_s: float) -> Path:
    """`src`'s first audio stream, then the same again `gap_s` later, as Matroska: a file
    whose timeline lasts `gap_s` plus twice `src` (silence between), for length limits."""
    with av.open(str(dst), "w", format="matroska") as out:
        stream = None
        for shift in (0.0, gap_s):
            with av.open(str(src)) as source:
                audio = source.streams.audio[0]
                stream = stream or out.add_stream_from_template(audio)
                for packet in source.demux(audio):
                    if not packet.size:
                        continue
                    ticks = round(shift / packet.time_base)
                    packet.pts = None if packet.pts is None else packet.pts + ticks
                    packet.dts = None if packet.dts is None else packet.dts + ticks
                    packet.stream = stream
                    out.mux(packet)
    return dst


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
        return httpx.put(
            upload["uploadUrl"], content=body, headers=upload["uploadHeaders"] if headers is None else headers, timeout=30
        )

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


def move_upload_expiry_to_the_past(database_url: str, upload_name: str, ago: timedelta = timedelta(seconds=1)) -> None:
    """Time travel for an upload's expiry, to `ago` before now: the media schema's row is the only clock it has."""

    async def update() -> None:
        con = await asyncpg.connect(database_url)
        try:
            await con.execute(
                "UPDATE media.uploads SET expire_time = now() - $2::interval WHERE id = $1",
                uuid.UUID(upload_name.split("/")[-1]),
                ago,
            )
        finally:
            await con.close()

    asyncio.run(update())
