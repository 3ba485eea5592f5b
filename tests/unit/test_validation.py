"""The runtime checks every request against the API's rules before a handler sees it."""

from __future__ import annotations

import importlib
import pkgutil

import grpc
import octavia
import pytest
from google.api import field_behavior_pb2
from google.protobuf import descriptor
from octavia.auth.v1 import auth_pb2
from octavia.jobs.v1 import jobs_pb2
from octavia.limits.v1 import limits_pb2
from octavia.media.v1 import media_pb2
from octavia.translate.v1 import translate_pb2
from octavia.tts.v1 import tts_pb2

from octavia_runtime import validation
from octavia_runtime.errors import ApiError

F = descriptor.FieldDescriptor


def refusal(request) -> ApiError:
    with pytest.raises(ApiError) as caught:
        validation.check(request)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    return caught.value


def job_request(**fields) -> jobs_pb2.CreateJobRequest:
    request = jobs_pb2.CreateJobRequest(
        job=jobs_pb2.Job(kind=jobs_pb2.JOB_KIND_SUBTITLES, input_asset="assets/x", target_languages=["pt"])
    )
    for name, value in fields.items():
        setattr(request.job, name, value)
    return request


def test_a_well_formed_request_passes():
    validation.check(job_request(display_name="Talk, part 2 — “final” cut ✓", priority=jobs_pb2.PRIORITY_HIGH))


@pytest.mark.parametrize("bad", ["\x00", "\n", "\t", "\r", "\x1b[31m", "\x7f", "\x85", "\u2028"])
def test_control_characters_in_a_one_line_field_are_refused_naming_the_field(bad):
    error = refusal(job_request(display_name=f"talk{bad}x"))
    assert error.reason == "CONTROL_CHARACTER"
    assert "job.display_name" in error.fields


@pytest.mark.parametrize(
    "request_",
    [
        auth_pb2.SignUpRequest(email="a\x00@example.com", password="correct horse 9"),
        auth_pb2.CreateApiKeyRequest(display_name="ci\x00"),
        media_pb2.CreateUploadRequest(filename="a.mp4", content_type="video/mp4", size_bytes=1, request_id="r\x00"),
        jobs_pb2.ListJobsRequest(page_token="\x00"),
    ],
)
def test_nul_is_refused_in_every_service(request_):
    assert refusal(request_).reason == "CONTROL_CHARACTER"


def test_free_text_may_span_lines_but_holds_no_other_control_character():
    validation.check(tts_pb2.SynthesizeRequest(voice="voices/x", text="Line one.\nLine two,\tindented.\r\n"))
    assert refusal(tts_pb2.SynthesizeRequest(voice="voices/x", text="a\x00b")).reason == "CONTROL_CHARACTER"
    assert refusal(translate_pb2.TranslateTextRequest(texts=["ok", "bell\x07"])).fields.keys() == {"texts[1]"}


def test_a_string_longer_than_its_declared_limit_is_refused_before_any_work():
    error = refusal(auth_pb2.SignUpRequest(email="a" * 20_000 + "@example.com", password="x"))
    assert error.reason == "VALUE_TOO_LONG"
    assert error.fields["email"] == "at most 254 characters, not 20012"
    assert len(error.message) < 200  # the value itself is never quoted back


def test_a_string_without_a_declared_limit_has_the_default():
    validation.check(jobs_pb2.Job(name="x" * validation.DEFAULT_MAX_LENGTH))
    assert refusal(jobs_pb2.Job(name="x" * (validation.DEFAULT_MAX_LENGTH + 1))).reason == "VALUE_TOO_LONG"


def test_map_keys_and_values_are_checked():
    request = job_request()
    request.job.dubbing_options.voices["pt\n"] = "voices/x"
    assert refusal(request).reason == "CONTROL_CHARACTER"
    request = job_request()
    request.job.dubbing_options.voices["pt"] = "v" * 1000
    assert refusal(request).fields.keys() == {"job.dubbing_options.voices[pt]"}


@pytest.mark.parametrize(
    ("field", "value"),
    [("priority", 99), ("kind", 7), ("priority", -1)],
)
def test_an_undefined_enum_value_is_refused(field, value):
    error = refusal(job_request(**{field: value}))
    assert error.reason == "UNDEFINED_ENUM_VALUE"
    assert f"job.{field}" in error.fields


def test_undefined_enum_values_are_found_in_repeated_and_nested_fields():
    request = job_request()
    request.job.subtitle_options.formats.extend([jobs_pb2.SUBTITLE_FORMAT_SRT, 7])
    request.job.dubbing_options.audio_format = 5
    error = refusal(request)
    assert error.fields.keys() == {"job.subtitle_options.formats[1]", "job.dubbing_options.audio_format"}


def test_the_zero_value_of_an_enum_is_defined_but_not_as_an_element_of_a_list():
    validation.check(job_request(priority=jobs_pb2.PRIORITY_UNSPECIFIED))
    request = job_request()
    request.job.subtitle_options.formats.extend([jobs_pb2.SUBTITLE_FORMAT_VTT, jobs_pb2.SUBTITLE_FORMAT_UNSPECIFIED])
    error = refusal(request)
    assert error.reason == "UNDEFINED_ENUM_VALUE" and error.fields.keys() == {"job.subtitle_options.formats[1]"}


@pytest.mark.parametrize("seconds", [2**62, -(2**62), 315_576_000_001])
def test_a_duration_outside_its_definition_is_refused(seconds):
    request = job_request()
    request.job.stage_time_limit.seconds = seconds
    assert refusal(request).reason == "NUMBER_OUT_OF_RANGE"


def test_a_duration_with_mismatched_signs_is_refused():
    request = job_request()
    request.job.stage_time_limit.seconds, request.job.stage_time_limit.nanos = 5, -1
    assert refusal(request).reason == "NUMBER_OUT_OF_RANGE"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_number_that_is_not_finite_is_refused(value):
    request = job_request()
    request.job.dubbing_options.max_speed_factor = value
    assert refusal(request).reason == "NUMBER_OUT_OF_RANGE"


def test_lists_and_numbers_keep_their_declared_bounds():
    many = job_request()
    many.job.target_languages.extend(["es", "fr", "it", "de", "ja", "zh", "hi", "ko", "ru", "ar"])  # 11 in all
    assert refusal(many).reason == "TOO_MANY_VALUES"
    for seconds, ok in ((0, True), (21_600, True), (21_601, False), (-1, False)):
        request = job_request()
        request.job.stage_time_limit.seconds = seconds
        if ok:
            validation.check(request)
        else:
            error = refusal(request)
            assert error.reason == "NUMBER_OUT_OF_RANGE" and " s" in error.fields["job.stage_time_limit"]
    assert refusal(media_pb2.CreateDownloadUrlRequest(name="assets/a", ttl={"seconds": 86_401})).fields.keys() == {"ttl"}


def test_many_problems_are_reported_together_but_boundedly():
    request = translate_pb2.TranslateTextRequest(texts=["\x00"] * 500)
    error = refusal(request)
    assert len(error.fields) == validation.MAX_VIOLATIONS


def test_a_request_that_does_not_decode_is_malformed_not_a_crash():
    deserialize = validation.tolerant(jobs_pb2.GetJobRequest.FromString)
    assert isinstance(deserialize(b"\x0a\x02\xff\xfe"), validation.Malformed)  # name: not UTF-8
    assert isinstance(deserialize(b"\x0a\xff\xff\xff"), validation.Malformed)  # a length past the end
    assert deserialize(jobs_pb2.GetJobRequest(name="jobs/1").SerializeToString()).name == "jobs/1"
    assert refusal(validation.Malformed(ValueError())).reason == "MALFORMED_REQUEST"


# --- the API declares a limit for every string a client sends ---------------------------------


def _request_messages():
    for module in pkgutil.walk_packages(octavia.__path__, "octavia."):
        if module.name.endswith("_pb2"):
            for service in importlib.import_module(module.name).DESCRIPTOR.services_by_name.values():
                for method in service.methods:
                    yield method.input_type


def _undeclared_strings():
    seen, missing = set(), []

    def walk(message: descriptor.Descriptor) -> None:
        if message.full_name in seen or not message.full_name.startswith("octavia."):
            return
        seen.add(message.full_name)
        for field in message.fields:
            options = field.GetOptions()
            if field_behavior_pb2.OUTPUT_ONLY in options.Extensions[field_behavior_pb2.field_behavior]:
                continue  # ignored in requests; the default limit still applies
            is_map = field.type == F.TYPE_MESSAGE and field.message_type.GetOptions().map_entry
            holds_text = field.type == F.TYPE_STRING or (is_map and F.TYPE_STRING in (f.type for f in field.message_type.fields))
            if holds_text and not options.Extensions[limits_pb2.limits].max_length:
                missing.append(f"{message.full_name}.{field.name}")
            if field.type == F.TYPE_MESSAGE and not is_map:
                walk(field.message_type)

    for request in _request_messages():
        walk(request)
    return missing


def test_every_string_field_of_every_request_declares_its_maximum_length():
    assert _undeclared_strings() == []
