"""What a job costs: billing.proto's formula, rounded up to the billing unit, never below one credit."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2
from octavia.billing.v1 import billing_pb2
from octavia.jobs.v1 import jobs_pb2

from octavia_runtime.config import load
from octavia_runtime.errors import ApiError
from services.billing.pricing import Pricing

PRICES = load({"OCTAVIA_PRICES": "transcription=10,subtitles=10+5,audio_translation=20+30,video_dubbing=30+40"}).prices


def usage(kind: int, seconds: float, languages: int = 0) -> billing_pb2.Usage:
    whole = int(seconds)
    duration = duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))
    return billing_pb2.Usage(kind=kind, duration=duration, target_language_count=languages)


@pytest.mark.parametrize(
    ("kind", "seconds", "languages", "billable_s", "credits"),
    [
        (jobs_pb2.JOB_KIND_TRANSCRIPTION, 60, 0, 60, 10),  # a minute at 10 per minute
        (jobs_pb2.JOB_KIND_TRANSCRIPTION, 60.001, 0, 61, 11),  # a started second counts: 61 * 10 / 60 = 10.17 -> 11
        (jobs_pb2.JOB_KIND_TRANSCRIPTION, 90, 3, 90, 15),  # languages do not count for a transcription
        (jobs_pb2.JOB_KIND_SUBTITLES, 61.2, 2, 62, 21),  # 62 s * (10 + 2 * 5) / 60 = 20.67 -> 21
        (jobs_pb2.JOB_KIND_AUDIO_TRANSLATION, 180, 1, 180, 150),  # 3 min * (20 + 30)
        (jobs_pb2.JOB_KIND_VIDEO_DUBBING, 600, 2, 600, 1100),  # 10 min * (30 + 2 * 40)
        (jobs_pb2.JOB_KIND_TRANSCRIPTION, 0.3, 0, 1, 1),  # under a credit: the minimum of 1
    ],
)
def test_a_quote_follows_the_formula(kind, seconds, languages, billable_s, credits):
    quote = Pricing(PRICES, 1).quote(usage(kind, seconds, languages))
    assert (quote.billable_s, quote.credits) == (billable_s, credits)


def test_the_billing_unit_rounds_the_duration_up_to_whole_units():
    per_minute = Pricing(PRICES, 60)
    assert per_minute.quote(usage(jobs_pb2.JOB_KIND_TRANSCRIPTION, 61)).billable_s == 120
    assert per_minute.quote(usage(jobs_pb2.JOB_KIND_TRANSCRIPTION, 61)).credits == 20
    assert per_minute.quote(usage(jobs_pb2.JOB_KIND_TRANSCRIPTION, 120)).credits == 20


def test_a_transcription_is_priced_and_reported_without_languages():
    quote = Pricing(PRICES, 1).quote(usage(jobs_pb2.JOB_KIND_TRANSCRIPTION, 30.5, 4))
    assert quote.languages == 0
    reported = quote.usage()
    assert (reported.target_language_count, reported.duration.seconds, reported.duration.nanos) == (0, 30, 500_000_000)


@pytest.mark.parametrize(
    ("bad_usage", "field"),
    [
        (billing_pb2.Usage(duration=duration_pb2.Duration(seconds=5)), "usage.kind"),
        (billing_pb2.Usage(kind=99, duration=duration_pb2.Duration(seconds=5)), "usage.kind"),
        (billing_pb2.Usage(kind=jobs_pb2.JOB_KIND_SUBTITLES), "usage.duration"),
        (usage(jobs_pb2.JOB_KIND_SUBTITLES, -3), "usage.duration"),
        (usage(jobs_pb2.JOB_KIND_SUBTITLES, 8 * 24 * 3600), "usage.duration"),
        (usage(jobs_pb2.JOB_KIND_SUBTITLES, 10, -1), "usage.target_language_count"),
    ],
)
def test_a_bad_usage_is_invalid_argument_naming_the_field(bad_usage, field):
    with pytest.raises(ApiError) as refused:
        Pricing(PRICES, 1).quote(bad_usage)
    assert refused.value.code.name == "INVALID_ARGUMENT" and field in refused.value.fields


def test_the_price_list_has_every_kind_once_from_the_configuration():
    prices = Pricing(PRICES, 1).price_list()
    assert [(p.kind, p.credits_per_minute, p.credits_per_minute_per_target_language) for p in prices] == [
        (jobs_pb2.JOB_KIND_TRANSCRIPTION, 10, 0),
        (jobs_pb2.JOB_KIND_SUBTITLES, 10, 5),
        (jobs_pb2.JOB_KIND_AUDIO_TRANSLATION, 20, 30),
        (jobs_pb2.JOB_KIND_VIDEO_DUBBING, 30, 40),
    ]
