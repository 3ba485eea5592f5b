"""bench/dub: a VIDEO_DUBBING job through the mesh against the same steps run one after another in one process.

    python -m bench.dub [--seconds 60] [--language pt] [--rounds 3] [--tts-workers 2] [--tts-threads 1]
                        [--skip-sequential] [--skip-mesh]

The same clip of English speech with a picture (Piper, `--seconds` long,
scripts/sample_media.py) is dubbed into `--language`:

(a) sequentially, in this process, by the code the workers run, called
    directly and in pipeline order: probe, extract_audio (16 kHz), transcribe
    (faster-whisper, the configured model), render_subtitles of the source,
    translate (the engine the translate worker would pick), render_subtitles
    of the translation, tts of every segment with the language's default voice
    (TtsStage._speak: at the rate its pace says, again faster when needed), mix
    (timing fit, ducked mix, loudnorm), encode (m4a) and mux (mp4). The
    models are loaded and used once before the clock starts, as the
    long-running workers keep theirs loaded. Each step is timed; the
    process's peak RSS is reported.
(b) as a VIDEO_DUBBING job through Envoy: the clip is uploaded through the
    presigned URL flow beforehand, and the wall time runs from CreateJob to
    the SUCCEEDED event of WatchJob. The mesh is warmed first with a short
    dubbing job, so every worker has its models loaded. Each stage's time
    comes from the job's stages[] (first start to end; for tts, the first
    segment's start to the last one's end). The tts workers are what a
    deployment on this machine would run: `--tts-workers` processes (2) each
    keeping a synthesis to `--tts-threads` threads (1; OCTAVIA_TTS_THREADS),
    the stack's own worker restarted with that setting and the others started
    beside it; the stack's worker is restored when the bench ends.
    `--tts-workers 1 --tts-threads 0` uses the stack's as it is.

`--rounds` rounds alternate (a) and (b), so a busy moment hits both sides;
each prints the cores other processes used meanwhile (the machine's busy
time less this process's and the stack's). Printed side by side, medians:
wall times, the ratio mesh / sequential (target <= 0.9) and each stage's
seconds and real-time factor (stage time / media duration).

Needs the stack (`make up`; started here if it is not running).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import resource
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import cast

import httpx
from octavia.jobs.v1 import jobs_pb2, stages_pb2
from octavia.media.v1 import media_pb2

from octavia_runtime.blobs import RemoteBlobs
from octavia_runtime.config import Config, load
from octavia_runtime.stages import duration
from scripts import sample_media
from scripts import stack as local_stack
from services.jobs import pipeline
from services.media import dubbing, ffmpeg, mixing, subtitles
from services.media.probe import probe
from services.transcribe.engine import Transcriber
from services.translate.engines import Translators
from services.tts import stages as tts_stages
from services.tts.engines import Engines
from services.tts.voices import default_voice
from tests.integration.jobs_flow import create_job, uploaded_asset, watch

from ..users import sign_in

P = jobs_pb2
R = stages_pb2
TARGET = 0.9
# Rows of the table, in pipeline order: (label, the job's stage, on the translation's language?)
ROWS = (
    ("probe", "STAGE_PROBE", False),
    ("extract_audio", "STAGE_EXTRACT_AUDIO", False),
    ("transcribe", "STAGE_TRANSCRIBE", False),
    ("subtitles (source)", "STAGE_RENDER_SUBTITLES", False),
    ("translate", "STAGE_TRANSLATE", True),
    ("subtitles (target)", "STAGE_RENDER_SUBTITLES", True),
    ("tts", "STAGE_TTS", True),
    ("mix", "STAGE_MIX", True),
    ("encode", "STAGE_ENCODE", True),
    ("mux", "STAGE_MUX", True),
)


@dataclass
class Run:
    wall: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # label -> seconds
    spans: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (start, end) from the start
    notes: list[str] = field(default_factory=list)


# --- (a) sequential, in process -----------------------------------------------------------------


class Sequential:
    """The workers' code, in one process, with its models loaded once (as the workers keep them)."""

    def __init__(self, config: Config, language: str):
        self.language = language
        self.transcriber = Transcriber(config)
        self.translators = Translators(config)
        self.tts = tts_stages.TtsStage(Engines(config), blobs=cast(RemoteBlobs, None))  # _speak only: no storage
        self.voice = default_voice(language)

    def warm(self, clip: Path, folder: Path) -> None:
        """Load every model and run each once, on a short clip (not timed)."""
        self.dub(clip, folder, Run())

    def dub(self, clip: Path, folder: Path, run: Run) -> Run:
        folder.mkdir(parents=True, exist_ok=True)
        language = self.language
        started = time.perf_counter()

        @contextlib.contextmanager
        def step(label: str):
            t0 = time.perf_counter()
            yield
            t1 = time.perf_counter()
            run.steps[label] = t1 - t0
            run.spans[label] = (t0 - started, t1 - started)

        with step("probe"):  # at upload in the mesh (the probe stage reads the stored result)
            info = probe(clip)
        media_duration = info.duration.ToTimedelta().total_seconds()
        frame_rate = next(
            (s.frame_rate for s in info.streams if s.type == media_pb2.STREAM_TYPE_VIDEO and s.frame_rate > 0), 25.0
        )
        with step("extract_audio"):
            asr = folder / "asr.wav"
            ffmpeg.extract_audio(clip, asr, ffmpeg.ASR_SAMPLE_RATE)
        with step("transcribe"):  # as TranscribeStage: the job's model ("": the default), language detected
            transcript = self.transcriber.transcribe(asr, model="", language="", word_timestamps=True, vad_filter=True)
        with step("subtitles (source)"):
            _render(transcript, frame_rate, transcript.language, folder / "source")
        with step("translate"):  # as TranslateStage: the best engine for the pair
            translation = self.translators.translate_transcript(transcript, language)
        with step("subtitles (target)"):
            _render(translation, frame_rate, language, folder / "target")

        job, nodes = _job(transcript.language, language, self.voice.name, len(translation.segments))
        with step("tts"):  # as TtsStage, segment after segment
            cap = pipeline.speed_caps(job)[0]
            speeches = [self._speak(translation, i, cap) for i in range(len(translation.segments))]
        mix_task = pipeline.build_task(job, nodes, _node(nodes, P.STAGE_MIX, language), 1, frame_rate)
        with step("mix"):
            report, mixed = dubbing.mix_dub(clip, translation, speeches, folder, dubbing.DubSettings.of(mix_task, media_duration))
        with step("encode"):
            mixing.encode_audio(mixed, folder / "dub.m4a", "m4a", language=language)
        mux = pipeline.build_task(job, nodes, _node(nodes, P.STAGE_MUX, language), 1, frame_rate).mux
        with step("mux"):
            settings = dubbing.MuxSettings(
                language, mux.source_language, mux.keep_original_audio, mux.soft_subtitles, mux.burn_in, mux.frame_rate
            )
            dubbing.mux_dub(clip, mixed, report, translation, folder / "dub.mp4", settings)
        run.wall = time.perf_counter() - started
        spoken = [s for s in speeches if s.text]
        run.notes.append(
            f"{len(translation.segments)} segments ({translation.translation_engine}), voice {self.voice.name}, "
            f"{sum(s.speaking_rate > 1 for s in spoken)} spoken faster than normal to fit"
        )
        return run

    def _speak(self, translation, index: int, cap: float) -> stages_pb2.SynthesizedSpeech:
        """One segment's SynthesizedSpeech, as TtsStage.__call__ makes it (less the blob store)."""
        text = translation.segments[index].text.strip()
        if not text:
            return R.SynthesizedSpeech(segment_index=index, sample_rate_hertz=self.tts.engines.for_voice(self.voice).sample_rate)
        speech, rate = self.tts._speak(text, self.voice, tts_stages._slot(translation, index), cap)
        return R.SynthesizedSpeech(
            segment_index=index,
            wav=speech.wav(),
            sample_rate_hertz=speech.sample_rate,
            duration=duration(speech.duration_s),
            speaking_rate=rate,
            voice=f"voices/{self.voice.name}",
            text=text,
        )


def _job(source: str, language: str, voice: str, segments: int) -> tuple[jobs_pb2.Job, list[pipeline.Node]]:
    """A VIDEO_DUBBING job with default options, planned, its tts node's segment count known:
    the tasks the orchestrator would send (their options: speed caps, ducking, fit policy)."""
    job = P.Job(name="jobs/bench-dub", kind=P.JOB_KIND_VIDEO_DUBBING, target_languages=[language], detected_language=source)
    job.dubbing_options.voices[language] = f"voices/{voice}"
    nodes = pipeline.plan(job.kind, [language])
    job.stages.extend(P.StageStatus(stage=node.stage, language=node.language) for node in nodes)
    job.stages[_node(nodes, P.STAGE_TTS, language)].total_segments = segments
    return job, nodes


def _node(nodes: list[pipeline.Node], stage: jobs_pb2.Stage, language: str) -> int:
    """The index of a node a VIDEO_DUBBING job into `language` has."""
    index = pipeline.node_index(nodes, stage, language)
    assert index is not None, f"no {jobs_pb2.Stage.Name(stage)} node for {language}"
    return index


def _render(transcript, frame_rate: float, language: str, folder: Path) -> None:
    """What render_subtitles writes: SRT, VTT and the transcript's JSON."""
    folder.mkdir(exist_ok=True)
    cues = subtitles.build_cues(transcript, frame_rate=frame_rate, language=language or None).cues
    (folder / "subtitles.srt").write_text(subtitles.to_srt(cues), encoding="utf-8")
    (folder / "subtitles.vtt").write_text(subtitles.to_vtt(cues), encoding="utf-8")
    (folder / "transcript.json").write_text(subtitles.transcript_json(transcript), encoding="utf-8")


# --- (b) the mesh -------------------------------------------------------------------------------


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def dub_job(api: httpx.Client, headers: dict, asset: str, language: str) -> tuple[float, dict]:
    """CreateJob VIDEO_DUBBING -> the SUCCEEDED event: wall seconds and the final job."""
    started = time.perf_counter()
    created = create_job(api, headers, {"kind": "JOB_KIND_VIDEO_DUBBING", "inputAsset": asset, "targetLanguages": [language]})
    created.raise_for_status()
    final = watch(str(api.base_url), headers, created.json()["job"]["name"], timeout=3600)[-1]
    elapsed = time.perf_counter() - started
    if final["state"] != "STATE_SUCCEEDED":
        raise SystemExit(f"the dubbing job did not succeed: {final}")
    return elapsed, final["job"]


def mesh_run(job: dict, wall: float, language: str) -> Run:
    """Each stage's span from the job's own timestamps, from its creation."""
    run = Run(wall=wall)
    created = stamp(job["createTime"])
    for label, stage, on_target in ROWS:
        for status in job["stages"]:
            # The source's nodes carry no language, or the detected one (render_subtitles).
            if status["stage"] == stage and (status.get("language", "") == language) == on_target and "startTime" in status:
                start, end = stamp(status["startTime"]) - created, stamp(status["endTime"]) - created
                run.steps[label], run.spans[label] = end - start, (start, end)
    return run


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_peaks(config: Config, extra: dict[str, list[int]]) -> str:
    """Peak RSS of each worker: the stack's, and the ones started beside it."""
    peaks: list[str] = []
    for service in ("transcribe", "translate", "tts", "media"):
        main = int((config.var_dir / "run" / f"{service}.pid").read_text().split()[0])
        peaks.extend(f"{service} {vm_hwm_mb(pid):.0f}" for pid in [main, *extra.get(service, [])])
    return ", ".join(peaks) + " MB"


@contextlib.contextmanager
def tts_workers(config: Config, count: int, threads: int, log_dir: Path):
    """`count` tts worker processes of `threads` threads each: the stack's own, restarted with
    that setting, and `count - 1` more on their own ports; the stack's is restored after.
    Yields the extra ones' pids."""
    from tests.integration.replicas import replica

    if count == 1 and threads == config.tts_threads:
        yield []
        return
    local_stack.crash("tts", config)
    local_stack.up(dataclasses.replace(config, tts_threads=threads))
    try:
        with contextlib.ExitStack() as stack:
            pids = []
            for i in range(count - 1):
                folder = log_dir / f"tts-{i + 2}"
                folder.mkdir(parents=True, exist_ok=True)
                worker = replica(config, "tts", folder, OCTAVIA_TTS_THREADS=str(threads))
                pids.append(stack.enter_context(worker).process.pid)
            yield pids
    finally:
        local_stack.crash("tts", config)
        local_stack.up(config)


# --- the table ----------------------------------------------------------------------------------


def median_run(runs: list[Run]) -> Run | None:
    if not runs:
        return None
    median = Run(wall=statistics.median(r.wall for r in runs), notes=runs[0].notes)
    for label in runs[0].steps:
        median.steps[label] = statistics.median(r.steps[label] for r in runs if label in r.steps)
        start, end = (statistics.median(r.spans[label][i] for r in runs if label in r.spans) for i in (0, 1))
        median.spans[label] = (start, end)
    return median


def table(sequential: Run | None, mesh: Run | None, media_s: float, rounds: int) -> None:
    def cell(run: Run | None, label: str) -> str:
        if run is None or label not in run.steps:
            return f"{'-':>8} {'':>6}"
        return f"{run.steps[label]:7.2f}s {run.steps[label] / media_s:6.3f}"

    def span(run: Run | None, label: str) -> str:
        if run is None or label not in run.spans:
            return ""
        return f"{run.spans[label][0]:6.2f} -> {run.spans[label][1]:6.2f}"

    print(f"  medians of {rounds} round(s); RTF = seconds / {media_s:.1f} s of media")
    print(f"  {'stage':<20} {'sequential':>8} {'RTF':>6}   {'mesh':>8} {'RTF':>6}   mesh span from CreateJob (s)")
    for label, _, _ in ROWS:
        print(f"  {label:<20} {cell(sequential, label)}   {cell(mesh, label)}   {span(mesh, label)}")
    for name, run in (("sequential", sequential), ("mesh", mesh)):
        if run is not None:
            print(f"  {name + ' wall':<20} {run.wall:7.2f}s   RTF {run.wall / media_s:.3f}")
    if sequential and mesh:
        ratio = mesh.wall / sequential.wall
        verdict = "met" if ratio <= TARGET else "NOT met"
        print(f"  ratio mesh / sequential  {ratio:.2f}   (target <= {TARGET}: {verdict})")


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


_TICK = os.sysconf("SC_CLK_TCK")


def _busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _cpu_s(pid: int) -> float:
    """CPU seconds of a process and its reaped children (ffmpeg runs)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(v) for v in fields[11:15]) / _TICK  # utime stime cutime cstime


class ForeignLoad:
    """Cores used by processes other than this bench and the stack's during a phase:
    how busy the machine was with other people's work while we measured."""

    def __init__(self, config: Config, extra: list[int] | None = None):
        run = config.var_dir / "run"
        self.pids = [os.getpid(), *(int(f.read_text().split()[0]) for f in run.glob("*.pid")), *(extra or [])]

    def __enter__(self) -> ForeignLoad:
        self.t0, self.busy0, self.own0 = time.monotonic(), _busy_s(), sum(map(_cpu_s, self.pids))
        return self

    def __exit__(self, *exc) -> None:
        elapsed = time.monotonic() - self.t0
        own = sum(map(_cpu_s, self.pids)) - self.own0
        self.own = own / elapsed
        self.foreign = max(0.0, _busy_s() - self.busy0 - own) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--language", default="pt")
    parser.add_argument("--tts-workers", type=int, default=2, help="tts worker processes in the mesh run")
    parser.add_argument("--tts-threads", type=int, default=1, help="threads of each one's synthesis (0: one per core)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each; medians are printed")
    parser.add_argument("--skip-sequential", action="store_true")
    parser.add_argument("--skip-mesh", action="store_true")
    args = parser.parse_args()
    config = load()
    folder = Path(tempfile.mkdtemp(prefix="octavia-bench-dub-"))
    clip = sample_media.long_speech(folder / "clip.mp4", args.seconds)
    short = sample_media.sample_video(folder / "short.mp4")
    media_s = probe(clip).duration.ToTimedelta().total_seconds()
    print(f"bench/dub: {media_s:.1f} s of English speech with a picture, dubbed into {args.language} ({load_note()})")

    bench = None
    if not args.skip_sequential:
        bench = Sequential(config, args.language)
        bench.warm(short, folder / "warm")
        print("  (a) sequential: models loaded and run once before timing (warm, like long-running workers)")
    sequential: list[Run] = []
    mesh: list[Run] = []
    with contextlib.ExitStack() as stack:
        if not args.skip_mesh:
            local_stack.up(config)
            api = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{config.envoy_port}", timeout=60))
            extra = stack.enter_context(tts_workers(config, args.tts_workers, args.tts_threads, folder / "replicas"))
            headers = sign_in(api, config, credits=100_000)
            asset, short_asset = uploaded_asset(api, headers, clip), uploaded_asset(api, headers, short)
            dub_job(api, headers, short_asset, args.language)  # warm: each worker loads its models on first use
            print(
                "  (b) mesh: warmed with one short dubbing job first; "
                + f"{args.tts_workers} tts worker(s) of {args.tts_threads or 'one per core'} thread(s) each (the stack's and {len(extra)} more)"
            )
        for round_ in range(1, args.rounds + 1):  # interleaved, so a busy moment hits both sides
            if bench is not None:
                with ForeignLoad(config) as load_:
                    sequential.append(bench.dub(clip, folder / f"sequential-{round_}", Run()))
                print(
                    f"  round {round_} sequential {sequential[-1].wall:6.2f} s   (other processes used {load_.foreign:.2f} cores meanwhile)"
                )
            if not args.skip_mesh:
                with ForeignLoad(config, extra) as load_:
                    wall, job = dub_job(api, headers, asset, args.language)
                mesh.append(mesh_run(job, wall, args.language))
                print(f"  round {round_} mesh       {wall:6.2f} s   (other processes used {load_.foreign:.2f} cores meanwhile)")
        if bench is not None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"  sequential: {sequential[0].notes[0]}; peak RSS of the bench process {peak:.0f} MB")
        if mesh:
            tts = next(s for s in job["stages"] if s["stage"] == "STAGE_TTS")
            print(f"  mesh: {tts.get('totalSegments', 0)} segments; workers' peak RSS: {worker_peaks(config, {'tts': extra})}")
    print()
    table(median_run(sequential), median_run(mesh), media_s, args.rounds)


if __name__ == "__main__":
    main()
