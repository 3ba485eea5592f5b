"""Voices through the edge: what a signed-in client can list, and a short preview it can hear."""

from __future__ import annotations

import base64
import io
import wave

import grpc
import pytest
from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime.errors import error_info
from services.tts.api import MAX_TEXT_CHARS

from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration
SENTENCE = "Please bring your notes and a cup of coffee."


def tts(edge_channel) -> tts_pb2_grpc.TtsServiceStub:
    return tts_pb2_grpc.TtsServiceStub(edge_channel)


def wav_of(content: bytes) -> tuple[int, int, int, float]:
    """Channels, bytes per sample, sample rate and seconds of a WAV file."""
    with wave.open(io.BytesIO(content)) as file:
        return file.getnchannels(), file.getsampwidth(), file.getframerate(), file.getnframes() / file.getframerate()


def test_a_browser_lists_the_voices_of_a_language_with_its_default_first(rest, signed_in):
    reply = rest.get("/v1/voices", params={"language": "pt"}, headers=signed_in.headers)
    assert reply.status_code == 200, reply.text
    voices = reply.json()["voices"]
    assert {voice["language"] for voice in voices} == {"pt-BR", "pt-PT"}
    brazilian = [voice for voice in voices if voice["language"] == "pt-BR"]
    first = brazilian[0]
    assert first["name"] == "voices/kokoro-pt-br-alpha" and first["isDefault"]
    assert (first["engine"], first["sampleRateHertz"], first["supportsSpeakingRate"]) == ("ENGINE_KOKORO", 24000, True)
    assert sum(bool(voice.get("isDefault")) for voice in voices) == 1
    espeak = rest.get("/v1/voices", params={"language": "de", "engine": "ENGINE_ESPEAK"}, headers=signed_in.headers).json()
    assert [voice["name"] for voice in espeak["voices"]] == ["voices/espeak-de"]


def test_a_client_gets_one_voice_and_an_unknown_one_is_not_found(edge_channel, rest, signed_in):
    voice = tts(edge_channel).GetVoice(tts_pb2.GetVoiceRequest(name="voices/piper-en-us-joe"), metadata=signed_in.metadata).voice
    assert (voice.engine, voice.sample_rate_hertz, voice.language) == (tts_pb2.ENGINE_PIPER, 22050, "en-US")
    assert (voice.min_speaking_rate, voice.max_speaking_rate) == (0.5, 2.0)
    missing = rest.get("/v1/voices/no-such-voice", headers=signed_in.headers)
    assert missing.status_code == 404 and reason_of(missing.json()) == "VOICE_NOT_FOUND"


def test_a_client_hears_a_preview_as_16_bit_mono_wav(edge_channel, signed_in):
    reply = tts(edge_channel).Synthesize(
        tts_pb2.SynthesizeRequest(voice="voices/piper-en-us-joe", text=SENTENCE), metadata=signed_in.metadata
    )
    channels, width, rate, seconds = wav_of(reply.audio_content)
    assert (channels, width, rate) == (1, 2, 22050) and reply.content_type == "audio/wav"
    assert reply.sample_rate_hertz == 22050 and reply.speaking_rate == 1.0
    assert 1.5 < seconds < 5.0 and reply.duration.ToMilliseconds() == pytest.approx(seconds * 1000, abs=1)


def test_a_browser_previews_kokoro_faster_through_rest(rest, signed_in):
    body = {"voice": "voices/kokoro-en-us-alpha", "text": SENTENCE}
    normal = rest.post("/v1/speech:synthesize", json=body, headers=signed_in.headers, timeout=60)
    faster = rest.post("/v1/speech:synthesize", json={**body, "speakingRate": 1.5}, headers=signed_in.headers, timeout=60)
    assert normal.status_code == 200 and faster.status_code == 200, (normal.text, faster.text)
    assert faster.json()["speakingRate"] == 1.5 and faster.json()["sampleRateHertz"] == 24000
    normal_s = wav_of(base64.b64decode(normal.json()["audioContent"]))[3]
    faster_s = wav_of(base64.b64decode(faster.json()["audioContent"]))[3]
    assert faster_s < 0.8 * normal_s


def test_a_text_over_the_limit_is_refused_naming_the_limit(edge_channel, rest, signed_in):
    too_long = "word " * (MAX_TEXT_CHARS // 5 + 1)
    with pytest.raises(grpc.RpcError) as refused:
        tts(edge_channel).Synthesize(
            tts_pb2.SynthesizeRequest(voice="voices/espeak-en-us", text=too_long), metadata=signed_in.metadata
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_info(refused.value).reason == "VALUE_TOO_LONG" and str(MAX_TEXT_CHARS) in refused.value.details()
    browser = rest.post(
        "/v1/speech:synthesize", json={"voice": "voices/espeak-en-us", "text": too_long}, headers=signed_in.headers
    )
    assert browser.status_code == 400 and reason_of(browser.json()) == "VALUE_TOO_LONG"


def test_an_unknown_voice_or_a_rate_out_of_range_is_refused(edge_channel, rest, signed_in):
    with pytest.raises(grpc.RpcError) as refused:
        tts(edge_channel).Synthesize(tts_pb2.SynthesizeRequest(voice="voices/nobody", text="Hi."), metadata=signed_in.metadata)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND and error_info(refused.value).reason == "VOICE_NOT_FOUND"
    too_fast = rest.post(
        "/v1/speech:synthesize",
        json={"voice": "voices/espeak-en-us", "text": "Hi.", "speakingRate": 4},
        headers=signed_in.headers,
    )
    assert too_fast.status_code == 400 and "speaking_rate" in too_fast.text
