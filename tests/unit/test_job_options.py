"""CreateJob's checks of a dubbing job's options, without a server (services/jobs/api.py)."""

from __future__ import annotations

import pytest
from octavia.jobs.v1 import jobs_pb2 as P

from octavia_runtime.errors import ApiError
from services.jobs.api import JobApi, _dubbing_problems


def job(kind=P.JOB_KIND_VIDEO_DUBBING, targets=("pt",), **options) -> P.Job:
    spec = P.Job(kind=kind, input_asset="assets/a", target_languages=list(targets))
    if options:
        spec.dubbing_options.CopyFrom(P.DubbingOptions(**options))
    return spec


def test_defaults_and_sensible_options_pass():
    assert _dubbing_problems(job()) == {}
    assert _dubbing_problems(job(voices={"pt": "voices/espeak-pt-br"}, max_speed_factor=1.5, hard_speed_cap=2.0)) == {}
    assert _dubbing_problems(job(fit_policy=P.FIT_POLICY_EXTEND_VIDEO, keep_original_audio=True, soft_subtitles=True)) == {}
    assert _dubbing_problems(job(P.JOB_KIND_AUDIO_TRANSLATION, audio_format=P.AUDIO_FORMAT_MP3)) == {}


@pytest.mark.parametrize(
    ("spec", "field", "says"),
    [
        (job(voices={"es": "voices/espeak-es"}), "job.dubbing_options.voices", "target languages"),
        (job(voices={"pt": "espeak-pt-br"}), "job.dubbing_options.voices", "voices/{voice}"),
        (job(max_speed_factor=0.9), "job.dubbing_options.max_speed_factor", "1.0 to 1.5"),
        (job(max_speed_factor=1.6), "job.dubbing_options.max_speed_factor", "1.0 to 1.5"),
        (job(max_speed_factor=1.4, hard_speed_cap=1.2), "job.dubbing_options.hard_speed_cap", "max_speed_factor to 2.0"),
        (job(hard_speed_cap=2.5), "job.dubbing_options.hard_speed_cap", "max_speed_factor to 2.0"),
        (
            job(P.JOB_KIND_AUDIO_TRANSLATION, fit_policy=P.FIT_POLICY_EXTEND_VIDEO),
            "job.dubbing_options.fit_policy",
            "VIDEO_DUBBING",
        ),
        (
            job(P.JOB_KIND_AUDIO_TRANSLATION, keep_original_audio=True),
            "job.dubbing_options.keep_original_audio",
            "VIDEO_DUBBING only",
        ),
        (job(P.JOB_KIND_AUDIO_TRANSLATION, soft_subtitles=True), "job.dubbing_options.soft_subtitles", "VIDEO_DUBBING only"),
        (job(P.JOB_KIND_SUBTITLES, ducking_level=P.DUCKING_LEVEL_STRONG), "job.dubbing_options", "only AUDIO_TRANSLATION"),
    ],
)
def test_options_that_cannot_work_are_named(spec, field, says):
    problems = _dubbing_problems(spec)
    assert field in problems and says in problems[field]


class Voices:
    """Catalogue.voices as the tts service would answer: voices per language."""

    def __init__(self, by_language: dict[str, list[str]]):
        self.by_language = by_language

    async def voices(self, language: str):
        from octavia.tts.v1 import tts_pb2

        return [tts_pb2.Voice(name=name, language=language) for name in self.by_language.get(language, [])]


def api_with(voices: dict[str, list[str]]) -> JobApi:
    api = JobApi.__new__(JobApi)
    api.catalogue = Voices(voices)
    return api


async def test_each_language_gets_the_voice_asked_for_or_its_default():
    api = api_with({"pt": ["voices/kokoro-pt-br-alpha", "voices/espeak-pt-br"], "fr": ["voices/kokoro-fr-alpha"]})
    spec = job(targets=("pt", "fr"), voices={"pt": "voices/espeak-pt-br"})
    assert await api._voices(spec) == {"pt": "voices/espeak-pt-br", "fr": "voices/kokoro-fr-alpha"}
    assert await api._voices(job(P.JOB_KIND_SUBTITLES)) == {}  # nothing to speak


async def test_a_language_no_voice_speaks_is_refused_by_name():
    api = api_with({"pt": ["voices/kokoro-pt-br-alpha"]})
    with pytest.raises(ApiError) as refused:
        await api._voices(job(targets=("pt", "ga")))
    assert refused.value.reason == "UNSUPPORTED_LANGUAGE"
    assert "no voice speaks ga" in refused.value.fields["job.target_languages"]


@pytest.mark.parametrize("name", ["assets/x", "jobs/00000000-0000-4000-8000-000000000000", "assets/", "x"])
async def test_an_input_that_cannot_name_an_asset_is_a_bad_field_not_unreadable_media(name):
    with pytest.raises(ApiError) as caught:
        await api_with({})._validate(P.Job(kind=P.JOB_KIND_TRANSCRIPTION, input_asset=name))
    assert caught.value.reason == "INVALID_ARGUMENT" and "job.input_asset" in caught.value.fields
