"""bench/validation: what the runtime's check of every request costs, per call.

    python -m bench.validation [--seconds 1]

The shared interceptor runs `octavia_runtime.validation.check` on every
request before its handler (docs/architecture.md, "Bad input"). This times it
in one process, no server involved, on requests of three sizes: an empty one
(GetMe, most reads), a dubbing CreateJob with two languages, and the largest
message a request may carry, a TranslateTranscript of an hour of speech (600
segments, 6,000 words). Printed: microseconds per check, best of 5 rounds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from google.protobuf.message import Message
from octavia.auth.v1 import auth_pb2
from octavia.jobs.v1 import jobs_pb2
from octavia.translate.v1 import translate_pb2

from octavia_runtime import validation


def create_job() -> jobs_pb2.CreateJobRequest:
    request = jobs_pb2.CreateJobRequest(request_id="6f1c0e8e2b7d4b63a1a5d2c4e8f90a17")
    job = request.job
    job.kind = jobs_pb2.JOB_KIND_VIDEO_DUBBING
    job.input_asset = "assets/0c9f3a52-7d3e-4b0e-9a52-3f1e8d2c6b41"
    job.display_name = "Quarterly talk, final cut.mp4"
    job.target_languages.extend(["pt", "es"])
    job.dubbing_options.voices["pt"] = "voices/kokoro-pf_dora"
    job.dubbing_options.max_speed_factor = 1.3
    job.subtitle_options.formats.append(jobs_pb2.SUBTITLE_FORMAT_SRT)
    job.stage_time_limit.seconds = 1800
    return request


def an_hours_transcript() -> translate_pb2.TranslateTranscriptRequest:
    request = translate_pb2.TranslateTranscriptRequest(target_language="pt")
    transcript = request.transcript
    transcript.language = "en"
    for i in range(600):
        segment = transcript.segments.add(index=i, text="This is a sentence of about sixty characters, said aloud.")
        segment.start_offset.seconds, segment.end_offset.seconds = 6 * i, 6 * i + 5
        for w in range(10):
            word = segment.words.add(text=f"word{w}", probability=0.9)
            word.start_offset.seconds = 6 * i
    return request


def per_call_us(check: Callable[[Message], None], message: Message, seconds: float) -> float:
    best = float("inf")
    for _ in range(5):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / 5:
            check(message)
            calls += 1
        best = min(best, elapsed / calls)
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent on each request (default 1)")
    args = parser.parse_args()
    print("validation.check, per call (best of 5 rounds):")
    for name, message in (
        ("GetMe (empty)", auth_pb2.GetMeRequest()),
        ("CreateJob (a dub into 2 languages)", create_job()),
        ("TranslateTranscript (600 segments, 6,000 words)", an_hours_transcript()),
    ):
        validation.check(message)  # the message type's rules are worked out once, here
        print(f"  {name:50} {per_call_us(validation.check, message, args.seconds):10.1f} µs")


if __name__ == "__main__":
    main()
