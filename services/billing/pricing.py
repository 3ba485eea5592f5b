"""What a job costs, in credits: the rules of billing.proto's cost formula, nothing else.

    credits = max(1, ceil(billable_seconds * (per_minute + per_minute_per_language * languages) / 60))

where billable_seconds is the media duration rounded up to the billing unit
(`OCTAVIA_BILLING_UNIT_S`, 1 s by default: a started second counts whole),
and languages is the number of target languages, ignored for a
transcription. All arithmetic is on integers (nanoseconds, credits), so a
price never depends on float rounding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from google.protobuf import duration_pb2
from octavia.billing.v1 import billing_pb2
from octavia.jobs.v1 import jobs_pb2

from octavia_runtime.config import JOB_KINDS, Price
from octavia_runtime.errors import invalid_argument

NANOS_PER_S = 1_000_000_000
# Bounds that keep every price far inside int64, well beyond any real media.
MAX_DURATION_S = 7 * 24 * 3600
MAX_TARGET_LANGUAGES = 100


@dataclass(frozen=True)
class Quote:
    """A priced usage. `languages` is the count the price used (0 for a transcription)."""

    kind: jobs_pb2.JobKind
    duration_ns: int
    languages: int
    billable_s: int
    credits: int

    def usage(self) -> billing_pb2.Usage:
        """The usage as priced, in the API's terms (what a hold reports)."""
        seconds, nanos = divmod(self.duration_ns, NANOS_PER_S)
        return billing_pb2.Usage(
            kind=self.kind,
            duration=duration_pb2.Duration(seconds=seconds, nanos=nanos),
            target_language_count=self.languages,
        )


def kind_name(kind: int) -> str:
    """The configuration's name of a job kind: JOB_KIND_AUDIO_TRANSLATION -> "audio_translation"."""
    return jobs_pb2.JobKind.Name(kind).removeprefix("JOB_KIND_").lower()


class Pricing:
    def __init__(self, prices: Mapping[str, Price], billing_unit_s: int):
        self._prices = prices
        self._unit_ns = billing_unit_s * NANOS_PER_S

    def price_list(self) -> list[billing_pb2.Price]:
        """One price per job kind, in the API's order of kinds."""
        # The stubs type EnumTypeWrapper.Value as returning a bare int.
        return [self.price(cast(jobs_pb2.JobKind, jobs_pb2.JobKind.Value(f"JOB_KIND_{name.upper()}"))) for name in JOB_KINDS]

    def price(self, kind: jobs_pb2.JobKind) -> billing_pb2.Price:
        price = self._prices[kind_name(kind)]
        return billing_pb2.Price(
            kind=kind,
            credits_per_minute=price.per_minute,
            credits_per_minute_per_target_language=price.per_minute_per_language,
        )

    def quote(self, usage: billing_pb2.Usage, field: str = "usage") -> Quote:
        """Price `usage`; a bad usage is INVALID_ARGUMENT naming its fields under `field`."""
        bad = {}
        known = usage.kind in jobs_pb2.JobKind.values() and usage.kind != jobs_pb2.JOB_KIND_UNSPECIFIED
        if not known:
            bad[f"{field}.kind"] = "required: a job kind such as JOB_KIND_SUBTITLES"
        duration_ns = usage.duration.seconds * NANOS_PER_S + usage.duration.nanos
        if not usage.HasField("duration") or duration_ns <= 0:
            bad[f"{field}.duration"] = "required: the media duration, more than 0 s"
        elif duration_ns > MAX_DURATION_S * NANOS_PER_S:
            bad[f"{field}.duration"] = f"at most {MAX_DURATION_S} s"
        if not 0 <= usage.target_language_count <= MAX_TARGET_LANGUAGES:
            bad[f"{field}.target_language_count"] = f"between 0 and {MAX_TARGET_LANGUAGES}"
        if bad:
            raise invalid_argument(bad)

        languages = 0 if usage.kind == jobs_pb2.JOB_KIND_TRANSCRIPTION else usage.target_language_count
        price = self._prices[kind_name(usage.kind)]
        billable_s = _ceil_div(duration_ns, self._unit_ns) * self._unit_ns // NANOS_PER_S
        per_minute = price.per_minute + price.per_minute_per_language * languages
        credits = max(1, _ceil_div(billable_s * per_minute, 60))
        return Quote(usage.kind, duration_ns, languages, billable_s, credits)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)
