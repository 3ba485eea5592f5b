"""The `octavia` CLI's own parts: the event-stream parser, the credentials file,
its arguments and how it shows the API's errors. (The CLI against the real
stack is an integration test.)"""

from __future__ import annotations

import io
import json
import random
import stat
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from octavia_cli.cli import (
    UsageError,
    api_url,
    build_parser,
    content_type,
    default_api_url,
    job_name,
    job_request,
    language,
    safe_filename,
)
from octavia_cli.client import ApiError, Client, NotLoggedIn, format_error
from octavia_cli.credentials import CredentialStore, Session
from octavia_cli.progress import JobProgress, job_line
from octavia_cli.sse import SSEParser, iter_events

API = "http://127.0.0.1:8080"

# --------------------------------------------------------------------------- Server-Sent Events

# As Envoy writes WatchJob (stream_sse_style_delimited), with a non-ASCII message.
WATCH_STREAM = (
    'data: {"event":{"jobName":"jobs/1","type":"JOB_EVENT_TYPE_SNAPSHOT","state":"STATE_QUEUED","sequence":"1"}}\n\n'
    'data: {"event":{"jobName":"jobs/1","type":"JOB_EVENT_TYPE_PROGRESS","state":"STATE_RUNNING",'
    '"progress":{"percent":40,"stage":"STAGE_TRANSLATE","message":"Tradução (pt): 3/7"},"sequence":"2"}}\n\n'
    'data: {"event":{"jobName":"jobs/1","type":"JOB_EVENT_TYPE_STATE_CHANGED","state":"STATE_SUCCEEDED",'
    '"final":true,"sequence":"3"}}\n\n'
).encode()


def _events(chunks) -> list[dict]:
    return [json.loads(event.data)["event"] for event in iter_events(chunks)]


def test_a_watch_stream_split_anywhere_gives_the_same_events():
    whole = _events([WATCH_STREAM])
    assert [e["sequence"] for e in whole] == ["1", "2", "3"]
    assert whole[1]["progress"]["message"] == "Tradução (pt): 3/7"
    for cut in range(1, len(WATCH_STREAM)):  # every single cut, inside `ç` and `ã` too
        assert _events([WATCH_STREAM[:cut], WATCH_STREAM[cut:]]) == whole
    rng = random.Random(7)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(WATCH_STREAM)), 12))
        pieces = [WATCH_STREAM[a:b] for a, b in zip([0, *cuts], [*cuts, len(WATCH_STREAM)], strict=True)]
        assert _events(pieces) == whole


def test_an_event_is_dispatched_only_when_its_blank_line_arrives():
    parser = SSEParser()
    assert parser.feed(b"data: one\n") == []
    assert [e.data for e in parser.feed(b"\n")] == ["one"]


def test_crlf_split_between_cr_and_lf_is_one_line_end():
    parser = SSEParser()
    assert parser.feed(b"data: a\r") == []
    assert parser.feed(b"\n\r") == []  # the `\r` may be the start of `\r\n`
    assert [e.data for e in parser.feed(b"\ndata: b\r\r")] == ["a"]
    assert [e.data for e in parser.close()] == ["b"], "at the end, a last `\r` ends its line"


def test_several_data_lines_join_with_newlines():
    events = list(iter_events([b'data: {\ndata:  "a": 1\ndata\ndata: }\n\n']))
    assert [e.data for e in events] == ['{\n "a": 1\n\n}']


def test_comments_heartbeats_and_other_fields():
    stream = b"\xef\xbb\xbf: connected\n\n: ping\n\nevent: job\nid: 42\nretry: 3000\nfoo: bar\ndata: x\n\n"
    parser = SSEParser()
    events = parser.feed(stream)
    assert len(events) == 1
    assert (events[0].event, events[0].id, events[0].retry_ms, events[0].data) == ("job", "42", 3000, "x")
    assert parser.last_event_id == "42"


def test_an_event_cut_off_by_the_end_of_the_stream_is_dropped():
    assert [e.data for e in iter_events([b"data: whole\n\ndata: half"])] == ["whole"]


# --------------------------------------------------------------------------- credentials


def _tokens(n: int, expires_in: timedelta = timedelta(minutes=15)) -> dict:
    stamp = (datetime.now(UTC) + expires_in).isoformat().replace("+00:00", "Z")
    return {
        "accessToken": f"access-{n}",
        "accessTokenExpireTime": stamp,
        "refreshToken": f"refresh-{n}",
        "refreshTokenExpireTime": (datetime.now(UTC) + timedelta(days=30)).isoformat().replace("+00:00", "Z"),
        "tokenType": "Bearer",
    }


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_credentials_file_is_readable_by_its_owner_only(tmp_path):
    store = CredentialStore(tmp_path / "octavia")
    store.put(API, Session.from_tokens(_tokens(1), email="ada@example.com"))
    store.put("https://octavia.example.com", Session.from_tokens(_tokens(2), email="ada@example.com"))

    assert _mode(store.path) == 0o600
    assert _mode(store.directory) == 0o700
    assert store.get(API).accessToken == "access-1"
    assert store.get("https://octavia.example.com").accessToken == "access-2", "one session per API"
    assert store.remove(API) and store.get(API) is None
    assert store.get("https://octavia.example.com") is not None
    assert not list(store.directory.glob("*.tmp")), "no temporary file is left behind"


def test_the_config_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OCTAVIA_CONFIG_DIR", str(tmp_path / "conf"))
    assert CredentialStore().path == tmp_path / "conf" / "credentials.json"


def test_a_corrupt_credentials_file_reads_as_signed_out(tmp_path):
    store = CredentialStore(tmp_path)
    store.path.write_text("{not json")
    assert store.get(API) is None
    store.put(API, Session.from_tokens(_tokens(1)))
    assert store.get(API).refreshToken == "refresh-1"


class FakeAuth:
    """Answers the few auth calls these tests make, the way the API does (JSON
    mapping, ErrorInfo reasons); records what it was sent."""

    def __init__(self, *, valid_access: str, refresh_reply: tuple[int, dict]):
        self.valid_access = valid_access
        self.refresh_reply = refresh_reply
        self.refreshed_with: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/refresh":
            self.refreshed_with.append(json.loads(request.content)["refreshToken"])
            return httpx.Response(self.refresh_reply[0], json=self.refresh_reply[1])
        if request.headers.get("authorization") != f"Bearer {self.valid_access}":
            return httpx.Response(
                401, json=_status(16, "the access token has expired; refresh it or log in again", "TOKEN_EXPIRED")
            )
        return httpx.Response(200, json={"user": {"name": "users/1", "email": "ada@example.com"}})


def _status(code: int, message: str, reason: str, domain: str = "auth.octavia") -> dict:
    return {
        "code": code,
        "message": message,
        "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain, "metadata": {}}],
    }


def _client(store, fake) -> Client:
    return Client(API, store, transport=httpx.MockTransport(fake))


def test_an_expired_access_token_is_refreshed_first_and_the_rotated_tokens_are_saved(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(API, Session.from_tokens(_tokens(1, expires_in=timedelta(seconds=-5)), email="ada@example.com"))
    fake = FakeAuth(valid_access="access-2", refresh_reply=(200, {"tokens": _tokens(2)}))

    with _client(store, fake) as client:
        assert client.call("GET", "/v1/auth/me")["user"]["email"] == "ada@example.com"

    assert fake.refreshed_with == ["refresh-1"]
    saved = store.get(API)
    assert (saved.accessToken, saved.refreshToken, saved.email) == ("access-2", "refresh-2", "ada@example.com")
    assert _mode(store.path) == 0o600


def test_a_call_refused_with_token_expired_is_refreshed_and_sent_again(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(API, Session.from_tokens(_tokens(1)))  # our clock says valid; the server disagrees
    fake = FakeAuth(valid_access="access-2", refresh_reply=(200, {"tokens": _tokens(2)}))

    with _client(store, fake) as client:
        client.call("GET", "/v1/auth/me")

    assert fake.refreshed_with == ["refresh-1"]
    assert store.get(API).refreshToken == "refresh-2"


def test_tokens_another_process_rotated_are_used_instead_of_refreshing_twice(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(API, Session.from_tokens(_tokens(1, expires_in=timedelta(seconds=-5))))
    fake = FakeAuth(valid_access="access-2", refresh_reply=(401, _status(16, "refresh token reused", "SESSION_ENDED")))
    with _client(store, fake) as client:
        store.put(API, Session.from_tokens(_tokens(2)))  # the other process, after we read the file
        client.call("GET", "/v1/auth/me")

    assert fake.refreshed_with == [], "a used refresh token presented again would end the session"


def test_a_refused_refresh_forgets_the_session(tmp_path):
    store = CredentialStore(tmp_path)
    store.put(API, Session.from_tokens(_tokens(1, expires_in=timedelta(seconds=-5))))
    fake = FakeAuth(valid_access="access-2", refresh_reply=(401, _status(16, "this session has ended", "SESSION_ENDED")))

    with _client(store, fake) as client, pytest.raises(NotLoggedIn, match="octavia login"):
        client.call("GET", "/v1/auth/me")
    assert store.get(API) is None


# --------------------------------------------------------------------------- arguments


def _translate(*argv: str):
    return build_parser().parse_args(["translate", "talk.mp4", *argv])


def test_api_url_goes_before_or_after_the_command():
    assert build_parser().parse_args(["--api", "http://a:1", "jobs"]).api == "http://a:1"
    assert build_parser().parse_args(["jobs", "--api", "http://b:2"]).api == "http://b:2"
    assert not hasattr(build_parser().parse_args(["jobs"]), "api")


def test_the_default_api_is_the_env_variable_else_the_local_envoy():
    assert default_api_url({"OCTAVIA_API_URL": "https://octavia.example.com"}) == "https://octavia.example.com"
    assert default_api_url({"OCTAVIA_ENVOY_PORT": "18080"}) == "http://127.0.0.1:18080"
    assert api_url("http://h:1/", {}) == "http://h:1"
    with pytest.raises(UsageError):
        api_url("localhost:8080", {})


def test_subtitles_into_two_languages():
    job = job_request(_translate("--to", "pt", "--to", "es", "--to", "pt", "--subtitles", "--from", "EN",
                                 "--format", "srt", "--format", "vtt", "--model", "base"))  # fmt: skip
    assert job == {
        "kind": "JOB_KIND_SUBTITLES",
        "targetLanguages": ["pt", "es"],
        "sourceLanguage": "en",
        "subtitleOptions": {"formats": ["SUBTITLE_FORMAT_SRT", "SUBTITLE_FORMAT_VTT"]},
        "transcriptionOptions": {"model": "base"},
    }


def test_a_transcript_has_no_target_language():
    assert job_request(_translate("--transcript")) == {"kind": "JOB_KIND_TRANSCRIPTION"}


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--to", "pt"], "say what to make"),
        ([], "say what to make"),
        (["--subtitles"], "needs at least one --to"),
        (["--transcript", "--to", "pt"], "drop --to"),
        (["--dub"], "--dub needs at least one --to"),
        (["--audio-only", "--to", "pt", "--fit", "extend-video"], "are for --dub"),
        (["--audio-only", "--to", "pt", "--soft-subtitles"], "are for --dub"),
        (["--dub", "--to", "pt", "--max-speed", "2"], "between 1.0 and 1.5"),
        (["--dub", "--to", "pt", "--voice", "es=voices/espeak-es"], "one of the --to languages"),
        (["--dub", "--to", "pt", "--voice", "pt"], "LANG=VOICE"),
        (["--to", "português", "--subtitles"], "not a language tag"),
    ],
)
def test_translate_arguments_that_cannot_work(argv, says):
    with pytest.raises(UsageError, match=says):
        job_request(_translate(*argv))


def test_a_dub_asks_for_video_dubbing_with_its_options():
    request = job_request(
        _translate("--dub", "--to", "pt", "--to", "es", "--voice", "pt=kokoro-pt-br-kumo", "--fit", "extend-video",
                   "--max-speed", "1.2", "--background", "replace", "--keep-original-audio", "--soft-subtitles", "--burn-in")
    )  # fmt: skip
    assert request == {
        "kind": "JOB_KIND_VIDEO_DUBBING",
        "targetLanguages": ["pt", "es"],
        "dubbingOptions": {
            "fitPolicy": "FIT_POLICY_EXTEND_VIDEO",
            "duckingLevel": "DUCKING_LEVEL_REPLACE",
            "audioFormat": "AUDIO_FORMAT_M4A",
            "voices": {"pt": "voices/kokoro-pt-br-kumo"},
            "maxSpeedFactor": 1.2,
            "keepOriginalAudio": True,
            "softSubtitles": True,
        },
        "subtitleOptions": {"burnIn": True},
    }


def test_audio_only_asks_for_an_audio_translation():
    request = job_request(_translate("--audio-only", "--to", "es", "--audio-format", "mp3", "--from", "en"))
    assert request == {
        "kind": "JOB_KIND_AUDIO_TRANSLATION",
        "targetLanguages": ["es"],
        "sourceLanguage": "en",
        "dubbingOptions": {
            "fitPolicy": "FIT_POLICY_KEEP_TIMING",
            "duckingLevel": "DUCKING_LEVEL_MEDIUM",
            "audioFormat": "AUDIO_FORMAT_MP3",
        },
    }


def test_only_one_output_kind_at_a_time():
    with pytest.raises(SystemExit) as exit:
        _translate("--subtitles", "--transcript")
    assert exit.value.code == 2


def test_language_tags_are_tidied():
    assert [language(t) for t in ("pt", "PT_br", "zh-hant", "es-419")] == ["pt", "pt-BR", "zh-hant", "es-419"]


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("talk.mp4", "", "video/mp4"),
        ("talk.MOV", "", "video/quicktime"),
        ("song.mp3", "", "audio/mpeg"),
        ("voice.m4a", "", "audio/mp4"),
        ("voice.wav", "", "audio/wav"),
        ("recording.bin", "audio/ogg", "audio/ogg"),
    ],
)
def test_the_content_type_is_guessed_from_the_name(tmp_path, name, given, expected):
    assert content_type(tmp_path / name, given) == expected


@pytest.mark.parametrize("name", ["notes.txt", "archive.bin"])
def test_a_file_that_is_not_media_by_name_is_refused_before_upload(tmp_path, name):
    with pytest.raises(UsageError, match="--content-type"):
        content_type(tmp_path / name)


def test_job_names_and_downloaded_file_names():
    assert job_name("0b5c") == job_name("jobs/0b5c") == "jobs/0b5c"
    with pytest.raises(UsageError):
        job_name("assets/0b5c")
    assert safe_filename("../../etc/passwd", "x") == "passwd"
    assert safe_filename("..", "assets-1") == "assets-1"
    assert safe_filename("talk.pt.srt", "x") == "talk.pt.srt"


# --------------------------------------------------------------------------- errors


def _error(status: int, body: dict | str) -> ApiError:
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    response = httpx.Response(status, content=content, headers={"content-type": "application/json"})
    return ApiError.from_response(response)


def test_a_service_error_shows_its_message_and_reason():
    # As Envoy returned it for a duplicate sign-up.
    body = (
        '{"code":6,"message":"an account with the email ada@example.com already exists","details":'
        '[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"EMAIL_TAKEN","domain":"auth.octavia","metadata":{}}]}'
    )
    error = _error(409, body)
    assert (error.http_status, error.code, error.reason, error.domain) == (409, 6, "EMAIL_TAKEN", "auth.octavia")
    assert format_error(error) == "an account with the email ada@example.com already exists [EMAIL_TAKEN]"


def test_field_problems_are_not_repeated_when_the_message_has_them():
    body = (
        '{"code":3,"message":"password: must be at least 10 characters long","details":['
        '{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"WEAK_PASSWORD","domain":"auth.octavia","metadata":{}},'
        '{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":'
        '[{"field":"password","description":"must be at least 10 characters long","reason":""}]}]}'
    )
    assert format_error(_error(400, body)) == "password: must be at least 10 characters long [WEAK_PASSWORD]"
    other = json.loads(body) | {"message": "bad request"}
    assert format_error(_error(400, other)) == "bad request [WEAK_PASSWORD]\n  password: must be at least 10 characters long"


def test_envoys_own_errors_show_their_message_and_reason():
    body = '{"code":404,"message":"Could not resolve /v1/nothing to a method.","reason":"early_grpc_json_transcode_failure{NOT_FOUND}"}'
    error = _error(404, body)
    assert error.code is None, "404 here is Envoy's HTTP code, not a gRPC code"
    assert format_error(error) == "Could not resolve /v1/nothing to a method. [early_grpc_json_transcode_failure{NOT_FOUND}]"


def test_a_body_that_is_not_json_is_shown_with_the_http_status():
    assert format_error(_error(502, "upstream connect error")) == "HTTP 502 Bad Gateway: upstream connect error"


def test_a_failed_jobs_error_reads_like_an_api_error():
    error = ApiError.from_status(_status(3, "the input has no audio stream", "MEDIA_UNREADABLE", "jobs.octavia"))
    assert format_error(error) == "the input has no audio stream [MEDIA_UNREADABLE]"


# --------------------------------------------------------------------------- progress


def test_job_progress_without_a_terminal_prints_a_line_per_change():
    out = io.StringIO()
    view = JobProgress(out, interactive=False)
    for event in _events([WATCH_STREAM]):
        view.update(event)
    view.update({"type": "JOB_EVENT_TYPE_HEARTBEAT", "state": "STATE_SUCCEEDED"})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("queued ")
    assert "40%  translate: Tradução (pt): 3/7" in lines[1]
    assert lines[2].startswith("succeeded ") and " 40%  translate" in lines[2], "an event without progress keeps the last"
    assert len(lines) == 3


def test_a_job_line_fits_the_terminal():
    line = job_line("STATE_RUNNING", 55, "STAGE_TRANSCRIBE", "Transcribing " + "x" * 200, width=60)
    assert len(line) == 60 and line.startswith("running") and " 55%  transcribe: " in line
