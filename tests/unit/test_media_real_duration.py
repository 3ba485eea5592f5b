"""A file is priced and limited by what it holds, not by what its header says, and no
stage makes more of it than the job paid for.

The lying files are real media made with ffmpeg whose header was then edited
(tests/integration/media_fixtures.py, make_lying_samples): 60 s of sound that
claims 1 s, in Matroska, WebM, MP4 (audio and video), FLAC, MP3 and chained Ogg.
"""

from __future__ import annotations

import uuid
import wave
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest
from google.protobuf import duration_pb2
from octavia.jobs.v1 import jobs_pb2 as P
from octavia.media.v1 import media_pb2

from octavia_runtime import fit
from octavia_runtime.stages import StageContext
from services.jobs import pipeline
from services.media import dubbing, ffmpeg, mixing
from services.media.ffmpeg import run
from services.media.probe import MediaRejected, check_upload, probe
from services.media.stages import MediaStages
from services.media.storage import LocalBlobStore
from services.media.store import AssetRow
from tests.integration.media_fixtures import CLAIMED_SECONDS, REAL_SECONDS
from tests.unit.test_dub_stages import speech, translation

LYING = ["lying.mkv", "lying.webm", "lying.m4a", "lying_video.mp4", "lying.flac", "lying.mp3", "chained.opus"]
FOUR_HOURS_S = 4 * 3600


def seconds(duration) -> float:
    return duration.ToNanoseconds() / 1e9


def wav_length(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def media_length(path: Path) -> float:
    """The longest stream of a file as its packets time it."""
    with av.open(str(path)) as container:
        ends = [
            float((packet.pts + packet.duration) * packet.time_base)
            for packet in container.demux()
            if packet.size and packet.pts is not None
        ]
    return max(ends)


# ---------------------------------------------------------------------------- probing


@pytest.mark.parametrize("name", LYING)
def test_a_header_that_claims_a_second_does_not_make_a_minute_last_a_second(lying_samples, name):
    info = probe(lying_samples / name)
    # chained.opus: each one-second link carries 6.5 ms of encoder delay of its own.
    assert seconds(info.duration) == pytest.approx(REAL_SECONDS, abs=0.5)
    timed = [s for s in info.streams if s.type in (media_pb2.STREAM_TYPE_AUDIO, media_pb2.STREAM_TYPE_VIDEO)]
    assert timed and all(seconds(s.duration) == pytest.approx(REAL_SECONDS, abs=0.5) for s in timed)


@pytest.mark.parametrize("name", LYING)
def test_the_upload_limit_counts_what_a_file_holds_not_what_its_header_says(lying_samples, name):
    info = probe(lying_samples / name)
    check_upload(info, FOUR_HOURS_S)
    with pytest.raises(MediaRejected) as refused:
        check_upload(info, REAL_SECONDS // 2)
    assert refused.value.reason == "MEDIA_TOO_LONG"
    assert "0:01:00" in refused.value.message


@pytest.mark.parametrize("name", [n for n in LYING if n != "chained.opus"])
def test_an_honest_header_is_kept_to_the_millisecond(lying_samples, name):
    """The packets confirm the header: its figure (which knows the codec's delay and padding) stands."""
    honest = probe(lying_samples / f"honest_{name}")
    assert seconds(honest.duration) == pytest.approx(REAL_SECONDS, abs=0.01)
    assert seconds(probe(lying_samples / name).duration) == pytest.approx(seconds(honest.duration), abs=0.01)


def test_a_file_whose_packets_end_long_before_its_header_says_is_cut_short(lying_samples):
    with pytest.raises(MediaRejected) as refused:
        probe(lying_samples / "overclaiming.mkv")
    assert refused.value.reason == "NOT_MEDIA" and "cut short" in refused.value.message


@pytest.mark.parametrize(
    ("ext", "codecs"), [("mkv", ["-c:a", "libvorbis", "-c:s", "srt"]), ("mp4", ["-c:a", "aac", "-c:s", "mov_text"])]
)
def test_subtitles_that_run_past_the_sound_neither_refuse_the_file_nor_lengthen_it(tmp_path, ext, codecs):
    """The header's duration covers the subtitle track (10 s); the media is the 2 s of sound."""
    srt = tmp_path / "late.srt"
    srt.write_text("1\n00:00:00,500 --> 00:00:01,500\nHello\n\n2\n00:00:08,000 --> 00:00:10,000\nLate\n")
    path = tmp_path / f"talk.{ext}"
    run(
        ["-f", "lavfi", "-i", "sine=duration=2", "-i", str(srt), "-map", "0", "-map", "1", *codecs, str(path)],
        "a file with subtitles",
    )
    info = probe(path)
    assert seconds(info.duration) == pytest.approx(2.0, abs=0.05)
    check_upload(info, FOUR_HOURS_S)


def test_the_header_claims_a_second_and_so_would_the_old_reading(lying_samples):
    """The samples do lie: what the container says of itself is CLAIMED_SECONDS."""
    for name in LYING:
        with av.open(str(lying_samples / name)) as container:
            assert container.duration / av.time_base == pytest.approx(CLAIMED_SECONDS, abs=0.1), name


# ---------------------------------------------------------------------------- extraction


def test_extraction_stops_at_the_paid_duration_even_where_timestamps_lie(lying_samples, tmp_path):
    """squeezed.mkv holds 60 s of samples on 3 s of timestamps: its packets under-report too,
    so the cut is counted in samples."""
    squeezed = lying_samples / "squeezed.mkv"
    assert seconds(probe(squeezed).duration) < 4
    ffmpeg.extract_audio(squeezed, tmp_path / "all.wav")
    assert wav_length(tmp_path / "all.wav") == pytest.approx(REAL_SECONDS, abs=0.1)  # what ffmpeg alone makes of it

    ffmpeg.extract_audio(squeezed, tmp_path / "asr.wav", max_seconds=3.5)
    assert wav_length(tmp_path / "asr.wav") == pytest.approx(3.5, abs=0.001)
    ffmpeg.extract_original_audio(squeezed, tmp_path / "original.wav", max_seconds=3.5)
    assert wav_length(tmp_path / "original.wav") == pytest.approx(3.5, abs=0.001)


def test_a_limit_longer_than_the_audio_cuts_nothing(lying_samples, tmp_path):
    ffmpeg.extract_audio(lying_samples / "lying.m4a", tmp_path / "asr.wav", max_seconds=REAL_SECONDS + 5)
    assert wav_length(tmp_path / "asr.wav") == pytest.approx(REAL_SECONDS, abs=0.01)


class OneAsset:
    """MediaStore's `get`, for one asset."""

    def __init__(self, row: AssetRow):
        self.row = row

    async def get(self, owner_id, asset_id) -> AssetRow | None:
        return self.row if asset_id == self.row.id else None


async def test_the_extract_audio_stage_makes_no_more_speech_than_the_job_paid_for(lying_samples, tmp_path):
    """The job's task carries the duration it was priced by; the stage stops there, whatever
    the file holds beyond it (here an asset probed before its real length was measured)."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    asset_id, owner_id = uuid.uuid4(), uuid.uuid4()
    key = f"assets/{asset_id}/talk.mkv"
    await blobs.put_file(key, lying_samples / "squeezed.mkv", "video/x-matroska")
    claimed = media_pb2.MediaInfo(format_name="matroska,webm", duration=duration_pb2.Duration(seconds=CLAIMED_SECONDS))
    row = AssetRow(asset_id, owner_id, media_pb2.ASSET_KIND_UPLOAD, "talk.mkv", "video/x-matroska", 1,
                   claimed.SerializeToString(), None, key, datetime.now(UTC))  # fmt: skip
    stages = MediaStages(blobs, OneAsset(row))  # type: ignore[arg-type]

    job = P.Job(name="jobs/j1", owner=f"users/{owner_id}", kind=P.JOB_KIND_TRANSCRIPTION, input_asset=f"assets/{asset_id}")
    job.media_duration.FromMilliseconds(2500)
    nodes = pipeline.plan(job.kind, [])
    task = pipeline.build_task(job, nodes, pipeline.node_index(nodes, P.STAGE_EXTRACT_AUDIO, "_"), 1)
    assert seconds(task.media_duration) == 2.5

    async def progress(percent: int, message: str) -> None:
        pass

    output = await stages.extract_audio(StageContext(task, "media.octavia", progress))
    (asr,) = output.outputs
    async with blobs.local_copy(asr.key) as path:
        assert wav_length(path) == pytest.approx(2.5, abs=0.001)
    assert seconds(asr.duration) == pytest.approx(2.5, abs=0.01)  # reckoned from the size, header and all

    # A task from before tasks carried it: the asset's probed duration is the limit.
    task.ClearField("media_duration")
    output = await stages.extract_audio(StageContext(task, "media.octavia", progress))
    async with blobs.local_copy(output.outputs[0].key) as path:
        assert wav_length(path) == pytest.approx(CLAIMED_SECONDS, abs=0.001)


# ---------------------------------------------------------------------------- the dub


def dub_settings(paid: float, policy=P.FIT_POLICY_KEEP_TIMING) -> dubbing.DubSettings:
    return dubbing.DubSettings("jobs/j", "pt", paid, policy, fit.FitLimits(1.0, 1.5), 0.25)


def test_the_mix_and_the_dubbed_video_end_where_the_paid_media_does(lying_samples, tmp_path):
    source = lying_samples / "lying_video.mp4"  # 60 s of picture and sound
    spoken = translation((0.5, 1.5, "Um."), duration=4.0)
    report, mixed = dubbing.mix_dub(source, spoken, [speech(0, 0.8)], tmp_path, dub_settings(4.0))
    assert mixing.wav_seconds(mixed) == pytest.approx(4.0, abs=0.001)

    out = tmp_path / "dub.mp4"
    dubbing.mux_dub(source, mixed, report, spoken, out, dubbing.MuxSettings("pt", "en", True, False, False, 25.0, 4.0))
    assert media_length(out) == pytest.approx(4.0, abs=0.05)


def test_extend_video_adds_its_picture_to_the_paid_media_and_nothing_else(lying_samples, tmp_path):
    source = lying_samples / "lying_video.mp4"
    spoken = translation((1.0, 2.0, "Um."), (3.0, 4.0, "Dois."), duration=5.0)
    settings = dub_settings(5.0, P.FIT_POLICY_EXTEND_VIDEO)
    report, mixed = dubbing.mix_dub(source, spoken, [speech(0, 3.0), speech(1, 0.5)], tmp_path, settings)
    assert dubbing.holds_of(report) == [(3.0, pytest.approx(1.0, abs=1e-6))]
    assert mixing.wav_seconds(mixed) == pytest.approx(6.0, abs=0.05)

    out = tmp_path / "dub.mp4"
    dubbing.mux_dub(source, mixed, report, spoken, out, dubbing.MuxSettings("pt", "en", True, False, False, 25.0, 5.0))
    assert media_length(out) == pytest.approx(6.0, abs=0.06)
