"""Dubbing end to end through Envoy's REST API, with the real models (Whisper, Bergamot, Kokoro).

The jobs are shared: the module's fixtures upload the clips and start every
dubbing job at once (the stack works on them side by side), and each test
reads the finished job it needs. Measurements use the downloaded files:
PyAV for container durations, video packets and frames, ffmpeg for the audio,
the project's own Whisper (services/transcribe/engine.py) to hear the dub.

A video without an audio stream is refused at upload with NO_AUDIO_STREAM:
tests/integration/test_media_uploads.py covers it, so it is not repeated here.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import jiwer
import pytest
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from octavia_runtime.config import load
from scripts import sample_media
from services.media.ffmpeg import ffmpeg_exe

from . import dub_checks as dc
from .jobs_flow import create_job, download, uploaded_asset, wait_for, watch
from .test_auth_flow import reason_of
from .test_jobs import TERMINAL, rest_user

pytestmark = pytest.mark.integration

LANGUAGES = ("pt", "es")  # the quality job's targets (those this install can dub)
SOURCE = "en"
DURATION_TOLERANCE_S = 0.050
START_TOLERANCE_S = 0.100
LOUD_DB = -40.0  # voice: a 10 ms window above this
MAX_WER = 0.25
JOB_TIMEOUT_S = 420


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def dubber(rest: httpx.Client, stack) -> dict:
    """A new user with enough credits for every job of the module (granted as an operator would)."""
    headers = rest_user(rest)
    user = rest.get("/v1/auth/me", headers=headers).json()["user"]["name"]
    token = ServiceCredentials("operator", stack.service_secret).token()
    with grpc.insecure_channel(stack.endpoint("billing").target) as channel:
        billing_pb2_grpc.BillingServiceStub(channel).GrantCredits(
            billing_pb2.GrantCreditsRequest(user=user, credits=5000, description="dubbing tests", request_id=uuid.uuid4().hex),
            metadata=((SERVICE_TOKEN_HEADER, token),),
        )
    return headers


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True, timeout=120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("dubbing-clips")
    video = sample_media.sample_video(folder / "talk.mp4")  # ~24 s, six sentences, testsrc2 picture
    # "Hello." is 0.3 s lead-in + the word + 0.5 s of picture after it; trimmed to 1 s if longer.
    hello = sample_media.sample_video(folder / "hello_full.mp4", "Hello.")
    short = folder / "hello.mp4"
    if dc.duration(hello) > 1.1:
        _ffmpeg(
            "-i",
            str(hello),
            "-t",
            "1.0",
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(short),
        )
    else:
        short = hello
    silence = sample_media.silent_audio(folder / "silence.wav", 4)
    quiet = sample_media.video_with_audio(silence, folder / "quiet.mp4", tail_s=0)
    speech = sample_media.sample_audio(folder / "speech.m4a", sample_media.DEMO_SENTENCES[:2])
    return {"video": video, "short": short, "quiet": quiet, "speech": speech}


@pytest.fixture(scope="module")
def catalogue(rest: httpx.Client, dubber: dict) -> dict[str, str]:
    """Why each of LANGUAGES cannot be dubbed from English here ("" when it can)."""
    pairs = rest.get("/v1/languagePairs", headers=dubber)
    assert pairs.status_code == 200, pairs.text
    served = {(p["sourceLanguage"], p["targetLanguage"]) for p in pairs.json().get("languagePairs", [])}
    why = {}
    for language in LANGUAGES:
        voices = rest.get(f"/v1/voices?language={language}", headers=dubber).json().get("voices", [])
        if (SOURCE, language) not in served:
            why[language] = f"no {SOURCE}->{language} translation pair in this install (GET /v1/languagePairs: {sorted(served)})"
        elif not voices:
            why[language] = f"no voice speaks {language} in this install"
        else:
            why[language] = ""
    return why


@dataclass
class Dub:
    """A dubbing job, its upload and, once finished, its final state and downloaded artifacts."""

    name: str
    source: Path
    request: dict
    created: dict
    folder: Path
    events: list[dict] = field(default_factory=list)
    job: dict | None = None
    files: dict[str, Path] = field(default_factory=dict)  # filename -> downloaded file

    def artifact(self, kind: str, language: str) -> dict:
        found = [a for a in self.job["artifacts"] if a["kind"] == f"ARTIFACT_KIND_{kind}" and a.get("language") == language]
        assert len(found) == 1, (kind, language, self.job["artifacts"])
        return found[0]

    def file(self, kind: str, language: str) -> Path:
        return self.files[self.artifact(kind, language)["filename"]]

    def report(self, language: str) -> dict:
        return json.loads(self.file("SYNC_REPORT", language).read_text(encoding="utf-8"))


class Dubs:
    """Every job of the module, started together; `finished(key)` waits for one and downloads its files."""

    def __init__(self, rest: httpx.Client, headers: dict, folder: Path):
        self.rest, self.headers, self.folder = rest, headers, folder
        self.dubs: dict[str, Dub] = {}
        self.assets: dict[Path, str] = {}

    def asset(self, path: Path) -> str:
        if path not in self.assets:
            self.assets[path] = uploaded_asset(self.rest, self.headers, path)
        return self.assets[path]

    def start(self, key: str, source: Path, job: dict) -> Dub:
        request = {"inputAsset": self.asset(source), "sourceLanguage": SOURCE, **job}
        created = create_job(self.rest, self.headers, request)
        assert created.status_code == 200, created.text
        body = created.json()["job"]
        self.dubs[key] = Dub(body["name"], source, request, body, self.folder / key)
        return self.dubs[key]

    def finished(self, key: str) -> Dub:
        dub = self.dubs[key]
        if dub.job is None:
            dub.job = wait_for(self.rest, self.headers, dub.name, lambda j: j["state"] in TERMINAL, timeout=JOB_TIMEOUT_S)
            assert dub.job["state"] == "STATE_SUCCEEDED", dub.job
            dub.folder.mkdir(parents=True, exist_ok=True)
            for artifact in dub.job["artifacts"]:
                response = download(self.rest, self.headers, artifact["asset"])
                assert response.status_code == 200, artifact
                path = dub.folder / artifact["filename"]
                path.write_bytes(response.content)
                dub.files[artifact["filename"]] = path
        return dub


def video_dub(targets, **options) -> dict:
    return {"kind": "JOB_KIND_VIDEO_DUBBING", "targetLanguages": list(targets), "dubbingOptions": options}


@pytest.fixture(scope="module")
def dubs(rest, dubber, clips, catalogue, tmp_path_factory) -> Dubs:
    """Starts every successful dubbing job of the module; the quality job is watched from its start."""
    jobs = Dubs(rest, dubber, tmp_path_factory.mktemp("dubs"))
    targets = [language for language in LANGUAGES if not catalogue[language]]
    assert targets, f"nothing to dub into: {catalogue}"
    # The quality job: the new voice alone (REPLACE), so its audio shows where the speech is.
    jobs.start("quality", clips["video"], video_dub(targets, duckingLevel="DUCKING_LEVEL_REPLACE"))
    jobs.start("extend", clips["video"], video_dub(["pt"], fitPolicy="FIT_POLICY_EXTEND_VIDEO", maxSpeedFactor=1.0))
    jobs.start(
        "mp3",
        clips["speech"],
        {"kind": "JOB_KIND_AUDIO_TRANSLATION", "targetLanguages": ["pt"], "dubbingOptions": {"audioFormat": "AUDIO_FORMAT_MP3"}},
    )
    jobs.start("short", clips["short"], video_dub(["pt"]))
    jobs.start("quiet", clips["quiet"], video_dub(["pt"]))
    return jobs


@pytest.fixture(scope="module")
def quality(rest, dubber, dubs, catalogue) -> Dub:
    """The quality job, watched live (WatchJob) from just after its creation to its end."""
    dub = dubs.dubs["quality"]
    dub.events = watch(str(rest.base_url), dubber, dub.name, timeout=JOB_TIMEOUT_S)
    return dubs.finished("quality")


@pytest.fixture(scope="module")
def transcriber():
    from services.transcribe.engine import Transcriber

    return Transcriber(load())


def dubbable(catalogue: dict[str, str], language: str) -> None:
    if catalogue[language]:
        pytest.skip(f"{language} cannot be dubbed here: {catalogue[language]}")


# ---------------------------------------------------------------------------- 1. quality (KEEP_TIMING)


@pytest.mark.parametrize("language", LANGUAGES)
def test_the_dubbed_video_lasts_as_long_as_the_input_and_copies_its_picture_bit_for_bit(quality, catalogue, language):
    dubbable(catalogue, language)
    video = quality.file("DUBBED_VIDEO", language)
    original, dubbed = dc.duration(quality.source), dc.duration(video)
    print(f"{language}: input {original:.3f} s, dubbed video {dubbed:.3f} s")
    assert abs(dubbed - original) <= DURATION_TOLERANCE_S

    kinds = [(kind, lang, default) for kind, _, lang, default in dc.streams(video)]
    assert kinds[0][0] == "video" and ("audio", {"pt": "por", "es": "spa"}[language], True) in kinds
    source_packets, dubbed_packets = dc.video_packets(quality.source), dc.video_packets(video)
    assert len(dubbed_packets) == len(source_packets)
    assert dubbed_packets == source_packets  # the bytes of every packet: copied, not re-encoded

    report = quality.report(language)
    assert report["fitPolicy"] == "FIT_POLICY_KEEP_TIMING" and report["language"] == language
    assert abs(dc.seconds(report["originalDuration"]) - original) <= DURATION_TOLERANCE_S


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_segment_starts_at_its_source_start_in_the_report_and_in_the_audio(quality, catalogue, language):
    """The report says where each segment's speech starts; the audio of the REPLACE mix (the
    new voice alone) must agree.

    Robust audio checks, chosen from what the voice track looks like: the fit fills each
    slot (borrowed silence), so a segment's speech often runs to within a few tens of ms of
    the next one's start and its tail decays through -40 dBFS just before it. So:
    - onset: the first 10 ms window above -40 dBFS at or after the reported dubbed start is
      within 100 ms of it (the voices' own leading silence is trimmed to a few ms);
    - a gap right before it: some window in the 150 ms before the start is below -40 dBFS
      (the speech before has stopped: we are at a boundary, not inside a word);
    - where the previous segment's reported speech ends 100 ms or more before this start,
      no window of those 100 ms is above -40 dBFS (nothing is heard there).
    """
    dubbable(catalogue, language)
    report = quality.report(language)
    segments = report["segments"]
    assert segments and not report.get("note")
    level = dc.levels(dc.pcm(quality.file("DUBBED_VIDEO", language)))

    drifts = []
    previous_end = None
    for i, segment in enumerate(segments):
        assert segment.get("index", 0) == i
        original, dubbed = dc.seconds(segment.get("originalStartOffset")), dc.seconds(segment.get("dubbedStartOffset"))
        drift = dc.seconds(segment.get("drift"))
        drifts.append(drift)
        assert dubbed >= original - 1e-6, segment  # never before its source
        assert abs(dubbed - (original + drift)) <= START_TOLERANCE_S, segment
        if segment.get("skipped"):
            continue
        onset = dc.first_loud(level, dubbed, LOUD_DB)
        assert onset is not None and onset - dubbed <= START_TOLERANCE_S, (i, dubbed, onset)
        assert abs(onset - (original + drift)) <= START_TOLERANCE_S, (i, original, drift, onset)
        if i:
            assert dc.quietest(level, dubbed - 0.150, dubbed) < LOUD_DB, (i, dubbed)
        if previous_end is not None and previous_end <= dubbed - START_TOLERANCE_S:
            assert dc.loudest(level, dubbed - START_TOLERANCE_S, dubbed) <= LOUD_DB, (i, dubbed)
        previous_end = dc.seconds(segment.get("dubbedEndOffset"))
    print(f"{language}: max drift {max(drifts):.3f} s (report {report.get('maxDrift', '0s')})")
    assert abs(max(drifts) - dc.seconds(report.get("maxDrift"))) <= 1e-3


@pytest.mark.parametrize("language", LANGUAGES)
def test_no_segment_is_sped_up_beyond_the_hard_cap_and_the_report_counts_those_over_the_cap(quality, catalogue, language):
    dubbable(catalogue, language)
    report = quality.report(language)
    soft, hard = report["maxSpeedFactor"], report["hardSpeedCap"]
    assert (soft, hard) == (1.3, 1.5)  # the defaults
    factors = [segment.get("speedFactor", 0.0) for segment in report["segments"] if not segment.get("skipped")]
    print(f"{language}: speed factors {factors}")
    assert factors and all(1.0 - 1e-6 <= f <= hard + 1e-6 for f in factors)
    for segment in report["segments"]:
        assert abs(segment.get("speakingRate", 0.0) * segment.get("stretch", 0.0) - segment.get("speedFactor", 0.0)) <= 1e-4
    over = sum(1 for s in report["segments"] if s.get("speedFactor", 0.0) > soft + 1e-6 or dc.seconds(s.get("overflow")) > 0)
    assert report.get("segmentsOverCap", 0) == over
    assert abs(report["maxAppliedSpeedFactor"] - max(factors)) <= 1e-6


@pytest.mark.parametrize("language", LANGUAGES)
def test_whisper_hears_the_target_language_and_the_translated_text_in_the_dub(quality, catalogue, transcriber, language):
    dubbable(catalogue, language)
    heard = transcriber.transcribe(quality.file("DUBBED_VIDEO", language), model="base", language="")
    report = quality.report(language)
    translated = " ".join(segment.get("text", "") for segment in report["segments"])
    transcript = json.loads(quality.file("TRANSCRIPT_JSON", language).read_text(encoding="utf-8"))
    assert dc.words(translated) == dc.words(" ".join(s.get("text", "") for s in transcript["segments"]))
    spoken = " ".join(segment.text for segment in heard.segments)
    error = jiwer.wer(dc.words(translated), dc.words(spoken))
    print(f"{language}: Whisper detected {heard.language} (p={heard.language_probability:.2f}), WER {error:.3f}")
    print(f"  translated: {translated}\n  heard:      {spoken}")
    assert heard.language == language
    assert error <= MAX_WER


def test_watching_a_dubbing_job_shows_the_segments_being_synthesized_and_its_success(quality):
    events = quality.events
    assert events[0]["type"] == "JOB_EVENT_TYPE_SNAPSHOT"
    assert events[-1]["final"] and events[-1]["state"] == "STATE_SUCCEEDED", events[-1]
    tts = [e["progress"] for e in events if e.get("progress", {}).get("stage") == "STAGE_TTS"]
    messages = [p.get("message", "") for p in tts]
    assert any("segments" in m for m in messages), messages
    percents = [int(e["progress"].get("percent", 0)) for e in events if e.get("progress")]
    assert percents == sorted(percents) and percents[-1] == 100
    job = quality.job
    assert all(stage["state"] == "STAGE_STATE_SUCCEEDED" for stage in job["stages"])
    tts_stages = [s for s in job["stages"] if s["stage"] == "STAGE_TTS"]
    assert tts_stages and all(s["completedSegments"] == s["totalSegments"] > 0 for s in tts_stages)


# ---------------------------------------------------------------------------- 2. EXTEND_VIDEO


def test_extend_video_holds_the_picture_so_each_segment_meets_its_own_picture(dubs, clips):
    dub = dubs.finished("extend")
    report = dub.report("pt")
    assert report["fitPolicy"] == "FIT_POLICY_EXTEND_VIDEO" and report["maxSpeedFactor"] == 1.0
    extension = dc.seconds(report.get("totalVideoExtension"))
    assert extension > 0, report

    video = dub.file("DUBBED_VIDEO", "pt")
    source_frames, frames = dc.Frames.of(clips["video"]), dc.Frames.of(video)
    frame = float(source_frames.times[1] - source_frames.times[0])
    original, dubbed = dc.duration(clips["video"]), dc.duration(video)
    print(f"extend: input {original:.3f} s + extension {extension:.3f} s; output {dubbed:.3f} s")
    assert abs(dubbed - (original + extension)) <= frame + DURATION_TOLERANCE_S

    shift = 0.0
    checked_moved = 0
    for i, segment in enumerate(report["segments"]):
        start, moved = dc.seconds(segment.get("originalStartOffset")), dc.seconds(segment.get("dubbedStartOffset"))
        assert abs(moved - (start + shift)) <= START_TOLERANCE_S, (i, segment, shift)
        assert segment.get("speedFactor", 0.0) <= 1.0 + 1e-6
        # The picture at the dubbed start is the source's picture at the original start: the
        # source frame most like it (within a second either way) is that frame, give or take
        # one frame for the rounding of the held time to whole frames.
        shown = frames.at(moved + 0.5 * frame)
        expected = source_frames.index_at(start + 0.5 * frame)
        lo, hi = source_frames.index_at(start - 1.0), source_frames.index_at(moved + 1.0)
        best = min(range(lo, hi + 1), key=lambda k: dc.difference(shown, source_frames.pictures[k]))
        same = dc.difference(shown, source_frames.pictures[best])
        unmoved = dc.difference(shown, source_frames.at(moved + 0.5 * frame))
        print(
            f"  segment {i}: shift {shift:.3f} s, best match frame {best} (expected {expected}), diff {same:.2f} vs unmoved {unmoved:.2f}"
        )
        assert abs(best - expected) <= 1, (i, best, expected)
        assert same < 1.5, (i, same)  # (nearly) the same image: only the re-encoding differs
        if shift > 2.5 * frame:
            assert unmoved > same + 2.0, (i, same, unmoved)
            checked_moved += 1
        shift += dc.seconds(segment.get("videoExtension"))
    assert abs(shift - extension) <= 1e-3
    assert checked_moved > 0, "no segment was moved by more than a couple of frames"


# ---------------------------------------------------------------------------- 3. AUDIO_TRANSLATION to mp3


def test_an_audio_translation_to_mp3_gives_an_mp3_as_long_as_the_input_and_a_sync_report(dubs, clips):
    dub = dubs.finished("mp3")
    kinds = {a["kind"] for a in dub.job["artifacts"]}
    assert "ARTIFACT_KIND_DUBBED_VIDEO" not in kinds
    assert "ARTIFACT_KIND_SYNC_REPORT" in kinds
    audio = dub.artifact("DUBBED_AUDIO", "pt")
    assert audio["contentType"] == "audio/mpeg" and audio["filename"].endswith(".pt.mp3"), audio
    path = dub.files[audio["filename"]]
    assert dc.format_name(path) == "mp3"
    assert [(kind, codec.startswith("mp3")) for kind, codec, _, _ in dc.streams(path)] == [("audio", True)]
    original, dubbed = dc.duration(clips["speech"]), dc.duration(path)
    print(f"mp3: input {original:.3f} s, dubbed {dubbed:.3f} s")
    assert abs(dubbed - original) <= DURATION_TOLERANCE_S
    assert dub.report("pt")["segments"]


def test_extend_video_is_refused_for_an_audio_translation_naming_the_field(rest, dubber, dubs, clips):
    job = {
        "kind": "JOB_KIND_AUDIO_TRANSLATION",
        "inputAsset": dubs.asset(clips["speech"]),
        "targetLanguages": ["pt"],
        "dubbingOptions": {"fitPolicy": "FIT_POLICY_EXTEND_VIDEO"},
    }
    response = create_job(rest, dubber, job)
    assert response.status_code == 400, response.text
    body = response.json()
    fields = [v["field"] for d in body["details"] for v in d.get("fieldViolations", [])]
    assert fields == ["job.dubbing_options.fit_policy"]
    assert "job.dubbing_options.fit_policy" in body["message"]


def test_a_video_dub_of_sound_alone_is_refused_when_created_not_failed_later(rest, dubber, dubs, clips):
    job = {"kind": "JOB_KIND_VIDEO_DUBBING", "inputAsset": dubs.asset(clips["speech"]), "targetLanguages": ["pt"]}
    response = create_job(rest, dubber, job)
    assert response.status_code == 400, response.text
    assert reason_of(response.json()) == "NO_VIDEO_STREAM"
    assert "JOB_KIND_AUDIO_TRANSLATION" in response.json()["message"]


# ---------------------------------------------------------------------------- 6. charges


def test_a_successful_dubbing_job_charges_its_quoted_price_once(rest, dubber, dubs):
    dub = dubs.finished("mp3")
    asset = rest.get(f"/v1/{dub.request['inputAsset']}", headers=dubber).json()["asset"]
    usage = {"kind": dub.request["kind"], "duration": asset["mediaInfo"]["duration"], "targetLanguageCount": 1}
    quote = rest.post("/v1/quotes:compute", headers=dubber, json={"usage": usage})
    assert quote.status_code == 200, quote.text
    price = int(quote.json()["quote"]["credits"])
    assert price > 0 and int(dub.created["creditsHeld"]) == price
    job = wait_for(rest, dubber, dub.name, lambda j: int(j.get("creditsCharged", 0)) > 0, timeout=30)
    assert int(job["creditsCharged"]) == price and int(job.get("creditsHeld", 0)) == 0
    transactions = rest.get("/v1/transactions?pageSize=100", headers=dubber).json().get("transactions", [])
    captures = [t for t in transactions if t["reason"] == "TRANSACTION_REASON_CAPTURE" and t["reference"] == dub.name]
    assert [int(t["heldChange"]) for t in captures] == [-price]


# ---------------------------------------------------------------------------- 4. edge cases


def test_a_one_second_clip_is_dubbed_to_the_same_length(dubs, clips):
    original = dc.duration(clips["short"])
    assert 0.8 <= original <= 1.1, original
    dub = dubs.finished("short")
    video = dub.file("DUBBED_VIDEO", "pt")
    dubbed = dc.duration(video)
    print(f"short: input {original:.3f} s, dubbed {dubbed:.3f} s; report {dub.report('pt').get('segments')}")
    assert abs(dubbed - original) <= DURATION_TOLERANCE_S
    assert dc.video_packets(video) == dc.video_packets(clips["short"])


def test_a_silent_clip_is_dubbed_as_itself_with_a_note(dubs, clips):
    dub = dubs.finished("quiet")
    assert dub.report("pt")["note"] == "no speech to dub"
    assert "no speech was found" in dub.job["progress"].get("message", ""), dub.job["progress"]
    video = dub.file("DUBBED_VIDEO", "pt")
    assert abs(dc.duration(video) - dc.duration(clips["quiet"])) <= DURATION_TOLERANCE_S
    assert [kind for kind, _, _, _ in dc.streams(video)][:2] == ["video", "audio"]


def test_a_language_without_a_voice_is_refused_by_name(rest, dubber, dubs, clips):
    pairs = rest.get("/v1/languagePairs", headers=dubber).json().get("languagePairs", [])
    voiceless = sorted(
        {p["targetLanguage"] for p in pairs if p["sourceLanguage"] == SOURCE}
        - {
            t
            for t in {p["targetLanguage"] for p in pairs}
            if rest.get(f"/v1/voices?language={t}", headers=dubber).json().get("voices")
        }
    )
    if not voiceless:
        pytest.skip(
            f"every language this install translates {SOURCE} into has a voice ({sorted({p['targetLanguage'] for p in pairs})})"
        )
    language = voiceless[0]
    response = create_job(
        rest, dubber, {"inputAsset": dubs.asset(clips["short"]), "sourceLanguage": SOURCE, **video_dub([language])}
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["details"][0]["reason"] == "UNSUPPORTED_LANGUAGE" and language in body["message"]


def test_a_voice_for_another_language_is_refused(rest, dubber, dubs, clips):
    job = {
        "inputAsset": dubs.asset(clips["short"]),
        "sourceLanguage": SOURCE,
        **video_dub(["pt"], voices={"pt": "voices/espeak-de"}),
    }
    response = create_job(rest, dubber, job)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["details"][0]["reason"] == "UNSUPPORTED_VOICE"
    assert "voices/espeak-de" in body["message"] and "job.dubbing_options.voices[pt]" in body["message"]


# ---------------------------------------------------------------------------- 5. cancel and delete


def test_a_dubbing_job_cancelled_while_synthesizing_gives_its_credits_back_and_can_be_deleted(rest, dubber, dubs, clips):
    dub = dubs.start("cancelled", clips["video"], video_dub(["pt"]))
    held = int(dub.created["creditsHeld"])
    assert held > 0

    def synthesizing(job: dict) -> bool:
        return job["state"] in TERMINAL or any(
            s["stage"] == "STAGE_TTS" and s["state"] == "STAGE_STATE_RUNNING" for s in job.get("stages", [])
        )

    job = wait_for(rest, dubber, dub.name, synthesizing, timeout=JOB_TIMEOUT_S)
    assert job["state"] == "STATE_RUNNING", job
    tts = [s for s in job["stages"] if s["stage"] == "STAGE_TTS"][0]
    cancelled = rest.post(f"/v1/{dub.name}:cancel", headers=dubber, json={})
    assert cancelled.status_code == 200, cancelled.text
    print(f"cancelled at tts: {tts.get('completedSegments', 0)} of {tts.get('totalSegments', 0)} segments")
    final = watch(str(rest.base_url), dubber, dub.name, timeout=120)[-1]
    assert final["state"] == "STATE_CANCELLED", final

    job = wait_for(rest, dubber, dub.name, lambda j: int(j.get("creditsHeld", 0)) == 0, timeout=30)
    assert int(job.get("creditsCharged", 0)) == 0 and int(job.get("creditsHeld", 0)) == 0
    assert job.get("artifacts", []) == []
    assert rest.get(f"/v1/assets?job={dub.name}", headers=dubber).json().get("assets", []) == []
    transactions = rest.get("/v1/transactions?pageSize=100", headers=dubber).json().get("transactions", [])
    mine = sorted(t["reason"] for t in transactions if t["reference"] == dub.name)
    assert mine == ["TRANSACTION_REASON_HOLD", "TRANSACTION_REASON_RELEASE"], mine

    assert rest.delete(f"/v1/{dub.name}", headers=dubber).status_code == 200
    assert rest.get(f"/v1/{dub.name}", headers=dubber).status_code == 404
