"""bench/transcribe: a TRANSCRIPTION job through the mesh against faster-whisper alone.

    python -m bench.transcribe [--model base] [--seconds 60] [--rounds 3] [--jobs 10] [--long 600]

1. The same clip of English speech (Piper, `--seconds` long) is transcribed
   (a) in this process by the same engine the worker uses (model loaded
   first, not timed: the worker keeps its model loaded too), and (b) as a
   TRANSCRIPTION job through Envoy (upload done beforehand; timed from
   CreateJob to the SUCCEEDED event of WatchJob, so it includes probe,
   audio extraction, the JetStream hops, subtitles and artifact
   registration), `--rounds` times each, interleaved; medians compared.
   Target: (b) / (a) <= 1.1.
2. `--jobs` short jobs measure the orchestrator's own latency from the job's
   server timestamps: create -> first stage running, and last stage done ->
   job SUCCEEDED. Target: p50 <= 100 ms each.
3. Peak memory and wall time of the transcribe worker for a 1 minute and a
   `--long` second file: the worker is restarted before each so its peak
   (VmHWM) is that file's. Targets: 10 min <= 1.2 x the peak of 1 min, and
   <= 11 x its wall time.

Needs the stack (`make up`; started here if it is not running).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

from octavia_runtime.config import load
from scripts import sample_media
from scripts import stack as local_stack
from services.transcribe.engine import Transcriber
from tests.integration.jobs_flow import create_job, uploaded_asset, watch

from ..users import sign_in


def run_job(api: httpx.Client, headers: dict, asset: str, model: str) -> tuple[float, dict]:
    started = time.perf_counter()
    created = create_job(
        api, headers, {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset, "transcriptionOptions": {"model": model}}
    )
    created.raise_for_status()
    final = watch(str(api.base_url), headers, created.json()["job"]["name"], timeout=3600)[-1]
    elapsed = time.perf_counter() - started
    if final["state"] != "STATE_SUCCEEDED":
        raise SystemExit(f"the job did not succeed: {final}")
    return elapsed, final["job"]


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def worker_pid(config) -> int:
    return int((config.var_dir / "run" / "transcribe.pid").read_text().split()[0])


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def fresh_worker(config) -> None:
    """Restart the transcribe service so its peak memory starts from zero."""
    pid = worker_pid(config)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while local_stack._alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    local_stack.up(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="base")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--long", type=float, default=600)
    args = parser.parse_args()
    config = load()
    local_stack.up(config)
    folder = Path(tempfile.mkdtemp(prefix="octavia-bench-"))
    clip = sample_media.long_speech(folder / "clip.wav", args.seconds)

    print(f"bench/transcribe: {args.seconds:.0f} s of English speech, model {args.model}")
    transcriber = Transcriber(config)
    transcriber.load(args.model)
    with httpx.Client(base_url=f"http://127.0.0.1:{config.envoy_port}", timeout=60) as api:
        headers = sign_in(api, config, credits=10_000)  # hours of transcription
        asset = uploaded_asset(api, headers, clip)
        run_job(api, headers, asset, args.model)  # warm: the worker loads the model on first use
        direct, mesh = [], []
        for _ in range(args.rounds):  # interleaved, so a busy moment hits both sides
            t0 = time.perf_counter()
            segments = len(transcriber.transcribe(clip, model=args.model).segments)
            direct.append(time.perf_counter() - t0)
            mesh.append(run_job(api, headers, asset, args.model)[0])
        del transcriber
        direct_s, mesh_s = statistics.median(direct), statistics.median(mesh)
        print(f"  faster-whisper in process   {direct_s:7.2f} s  median of {args.rounds} ({segments} segments)")
        print(f"  TRANSCRIPTION job via mesh  {mesh_s:7.2f} s  median of {args.rounds}")
        print(f"  ratio mesh / direct         {mesh_s / direct_s:7.2f}   (target <= 1.10)")

        short = sample_media.sample_audio(folder / "short.wav", fmt="wav")
        short_asset = uploaded_asset(api, headers, short)
        to_first, to_done = [], []
        for _ in range(args.jobs):
            _, job = run_job(api, headers, short_asset, "tiny.en")
            first_start = min(stamp(s["startTime"]) for s in job["stages"])
            last_end = max(stamp(s["endTime"]) for s in job["stages"])
            to_first.append(1000 * (first_start - stamp(job["createTime"])))
            to_done.append(1000 * (stamp(job["endTime"]) - last_end))
        print(
            f"  create -> first stage running  p50 {statistics.median(to_first):6.1f} ms  max {max(to_first):6.1f} ms  (target p50 <= 100)"
        )
        print(
            f"  last stage done -> SUCCEEDED   p50 {statistics.median(to_done):6.1f} ms  max {max(to_done):6.1f} ms  (target p50 <= 100)"
        )

        figures = {}
        for seconds in (60, args.long):
            path = sample_media.long_speech(folder / f"speech-{seconds:.0f}.wav", seconds)
            media_asset = uploaded_asset(api, headers, path)
            fresh_worker(config)
            wall, _ = run_job(api, headers, media_asset, args.model)
            figures[seconds] = (wall, vm_hwm_mb(worker_pid(config)))
            print(f"  {seconds / 60:4.1f} min file: job {wall:7.2f} s, transcribe worker peak RSS {figures[seconds][1]:6.0f} MB")
        (short_wall, short_peak), (long_wall, long_peak) = figures[60], figures[args.long]
        print(f"  peak RSS {args.long / 60:.0f} min / 1 min   {long_peak / short_peak:5.2f}   (target <= 1.2)")
        print(
            f"  wall     {args.long / 60:.0f} min / 1 min   {long_wall / short_wall:5.2f}   (target <= {args.long / 60 * 1.1:.0f})"
        )


if __name__ == "__main__":
    main()
