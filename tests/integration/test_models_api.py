"""Speech recognition and translation through the edge: what a signed-in client can list, translate and transcribe."""

from __future__ import annotations

import grpc
import pytest
from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc
from octavia.translate.v1 import translate_pb2, translate_pb2_grpc

from octavia_runtime.errors import error_info
from tests.unit.test_transcribe_engine import synthesize_speech, word_error_rate

from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration
CLIP_SCRIPT = ("Please bring your notes and a cup of coffee.", "The weather is cold but the sky is clear.")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> bytes:
    return synthesize_speech(CLIP_SCRIPT, tmp_path_factory.mktemp("clip") / "clip.wav").read_bytes()


def transcribe(edge_channel) -> transcribe_pb2_grpc.TranscribeServiceStub:
    return transcribe_pb2_grpc.TranscribeServiceStub(edge_channel)


def translate(edge_channel) -> translate_pb2_grpc.TranslateServiceStub:
    return translate_pb2_grpc.TranslateServiceStub(edge_channel)


def test_both_whisper_models_are_listed_as_available(edge_channel, signed_in):
    reply = transcribe(edge_channel).ListModels(transcribe_pb2.ListModelsRequest(), metadata=signed_in.metadata)
    models = {model.name: model for model in reply.models}
    assert models["base"].available and models["tiny.en"].available
    assert models["base"].multilingual and not models["tiny.en"].multilingual
    assert models["base"].size_bytes > 145_000_000
    assert reply.default_model == "base" and models["base"].is_default
    assert (reply.device, reply.compute_type) == ("cpu", "int8")


def test_english_portuguese_is_listed_both_ways_with_bergamot(rest, signed_in):
    reply = rest.get("/v1/languagePairs", headers=signed_in.headers)
    assert reply.status_code == 200, reply.text
    pairs = {(p["sourceLanguage"], p["targetLanguage"], p["engineName"]) for p in reply.json()["languagePairs"]}
    assert {("en", "pt", "bergamot"), ("pt", "en", "bergamot")} <= pairs
    only = rest.get("/v1/languagePairs", params={"sourceLanguage": "pt-BR"}, headers=signed_in.headers).json()
    assert {p["sourceLanguage"] for p in only["languagePairs"]} == {"pt"}


def test_a_client_translates_english_texts_into_portuguese(edge_channel, signed_in):
    reply = translate(edge_channel).TranslateText(
        translate_pb2.TranslateTextRequest(
            source_language="en", target_language="pt-BR", texts=["Good morning, everyone.", "", "The park is closed today."]
        ),
        metadata=signed_in.metadata,
    )
    assert len(reply.translations) == 3 and reply.translations[1] == ""
    assert "parque" in reply.translations[2]
    assert reply.language_pair.engine == translate_pb2.ENGINE_BERGAMOT and reply.language_pair.loaded


def test_a_browser_translates_through_rest(rest, signed_in):
    reply = rest.post(
        "/v1/translations:translateText",
        json={"sourceLanguage": "pt", "targetLanguage": "en", "texts": ["Obrigado pela ajuda."]},
        headers=signed_in.headers,
    )
    assert reply.status_code == 200, reply.text
    assert "thank" in reply.json()["translations"][0].lower()


def test_an_unsupported_pair_is_invalid_and_named(edge_channel, rest, signed_in):
    with pytest.raises(grpc.RpcError) as refused:
        translate(edge_channel).TranslateText(
            translate_pb2.TranslateTextRequest(source_language="en", target_language="xx", texts=["Hello"]),
            metadata=signed_in.metadata,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "en" in refused.value.details() and "xx" in refused.value.details()
    info = error_info(refused.value)
    assert info.reason == "UNSUPPORTED_LANGUAGE_PAIR" and info.domain == "translate.octavia"
    assert (info.metadata["source_language"], info.metadata["target_language"]) == ("en", "xx")
    browser = rest.post(
        "/v1/translations:translateText",
        json={"sourceLanguage": "en", "targetLanguage": "xx", "texts": ["Hello"]},
        headers=signed_in.headers,
    )
    assert browser.status_code == 400 and reason_of(browser.json()) == "UNSUPPORTED_LANGUAGE_PAIR"


def test_a_request_over_the_limits_is_refused(edge_channel, signed_in):
    with pytest.raises(grpc.RpcError) as refused:
        translate(edge_channel).TranslateText(
            translate_pb2.TranslateTextRequest(source_language="en", target_language="pt", texts=["word"] * 129),
            metadata=signed_in.metadata,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "REQUEST_TOO_LARGE"


def test_a_transcript_is_translated_with_its_timing(edge_channel, signed_in):
    original = transcribe_pb2.Transcript(language="en", model="base")
    for i, text in enumerate(("Welcome to the show.", "Let us begin.")):
        segment = original.segments.add(index=i, text=text)
        segment.start_offset.FromMilliseconds(2000 * i)
        segment.end_offset.FromMilliseconds(2000 * i + 1500)
    reply = translate(edge_channel).TranslateTranscript(
        translate_pb2.TranslateTranscriptRequest(transcript=original, target_language="pt"), metadata=signed_in.metadata
    )
    translated = reply.transcript
    assert translated.language == "pt" and translated.source_language == "en" and translated.translation_engine == "bergamot"
    assert [(s.index, s.start_offset, s.end_offset, s.source_text) for s in translated.segments] == [
        (s.index, s.start_offset, s.end_offset, s.text) for s in original.segments
    ]
    assert all(s.text and s.text != s.source_text for s in translated.segments)


def test_a_short_clip_is_transcribed_inline(edge_channel, signed_in, clip):
    reply = transcribe(edge_channel).TranscribeClip(
        transcribe_pb2.TranscribeClipRequest(audio_content=clip, model="tiny.en", word_timestamps=True),
        metadata=signed_in.metadata,
        timeout=60,
    )
    transcript = reply.transcript
    assert transcript.model == "tiny.en" and transcript.language == "en"
    assert word_error_rate(" ".join(CLIP_SCRIPT), " ".join(s.text for s in transcript.segments)) <= 0.15
    assert all(segment.words for segment in transcript.segments)


def test_a_clip_that_is_not_audio_or_names_an_unknown_model_is_invalid(edge_channel, signed_in, clip):
    stub = transcribe(edge_channel)
    cases = (
        (transcribe_pb2.TranscribeClipRequest(audio_content=b"certainly not audio" * 20), "NOT_MEDIA"),
        (transcribe_pb2.TranscribeClipRequest(audio_content=clip, model="large-v9"), "UNSUPPORTED_MODEL"),
        (transcribe_pb2.TranscribeClipRequest(audio_content=clip, model="tiny.en", language="es"), "UNSUPPORTED_LANGUAGE"),
    )
    for request, reason in cases:
        with pytest.raises(grpc.RpcError) as refused:
            stub.TranscribeClip(request, metadata=signed_in.metadata, timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, reason
        assert error_info(refused.value).reason == reason


def test_a_clip_from_an_asset_says_it_is_not_built_yet(edge_channel, signed_in):
    with pytest.raises(grpc.RpcError) as refused:
        transcribe(edge_channel).TranscribeClip(
            transcribe_pb2.TranscribeClipRequest(asset="assets/0b9a3c1e-0000-4000-8000-000000000000"), metadata=signed_in.metadata
        )
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "audio_content" in refused.value.details()
