"""Signed blob URLs (services/media/signing.py) and the storage key rules they rely on."""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from services.media import signing
from services.media.api import key_safe_filename
from services.media.storage import InvalidKey, LocalBlobStore, check_key, check_prefix, content_disposition

SECRET = "a-test-signing-key-of-at-least-32-characters"
KEY = "uploads/3f2a/talk.mp4"
NOW = 1_800_000_000


def put_grant(**changes) -> signing.Grant:
    fields = dict(method="PUT", key=KEY, expires=NOW + 60, max_bytes=1000, content_type="video/mp4")
    return signing.Grant(**{**fields, **changes})


def get_grant(**changes) -> signing.Grant:
    fields = dict(
        method="GET", key=KEY, expires=NOW + 60, content_type="video/mp4", disposition="attachment", filename="talk.mp4"
    )
    return signing.Grant(**{**fields, **changes})


def refusal(params: dict, method: str = "PUT", key: str = KEY, now: float = NOW, secret: str = SECRET) -> str:
    with pytest.raises(signing.SignatureError) as refused:
        signing.verify(secret, method, key, params, now)
    return refused.value.reason


def test_a_signed_url_allows_what_it_was_signed_for():
    assert signing.verify(SECRET, "PUT", KEY, signing.sign(SECRET, put_grant()), NOW) == put_grant()
    assert signing.verify(SECRET, "GET", KEY, signing.sign(SECRET, get_grant()), NOW) == get_grant()
    assert signing.verify(SECRET, "HEAD", KEY, signing.sign(SECRET, get_grant()), NOW) == get_grant()


@pytest.mark.parametrize(
    ("field", "forged"),
    [
        ("method", "GET"),
        ("expires", str(NOW + 3600)),
        ("obj", signing.object_digest("uploads/other")),
        ("max", "999999999"),
        ("type", "audio/mpeg"),
        ("sig", "A" * 43),
    ],
)
def test_editing_any_field_of_a_put_url_breaks_its_signature(field, forged):
    params = {**signing.sign(SECRET, put_grant()), field: forged}
    assert refusal(params, method=params["method"] if field == "method" else "PUT") == "SIGNATURE_INVALID"


@pytest.mark.parametrize(("field", "forged"), [("disposition", "inline"), ("filename", "evil.html"), ("type", "text/html")])
def test_editing_how_a_download_is_presented_breaks_its_signature(field, forged):
    params = {**signing.sign(SECRET, get_grant()), field: forged}
    assert refusal(params, method="GET") == "SIGNATURE_INVALID"


@pytest.mark.parametrize("field", ["max", "type"])
def test_removing_a_limit_breaks_the_signature(field):
    params = signing.sign(SECRET, put_grant())
    del params[field]
    assert refusal(params) == "SIGNATURE_INVALID"


def test_adding_an_empty_parameter_grants_nothing_new():
    params = {**signing.sign(SECRET, get_grant(content_type=None)), "max": "", "type": ""}
    assert signing.verify(SECRET, "GET", KEY, params, NOW) == get_grant(content_type=None)


def test_another_secret_or_no_signature_is_refused():
    params = signing.sign(SECRET, put_grant())
    assert refusal(params, secret="another-signing-key-of-32-characters-or-more") == "SIGNATURE_INVALID"
    assert refusal({k: v for k, v in params.items() if k != "sig"}) == "SIGNATURE_INVALID"
    assert refusal({}) == "SIGNATURE_INVALID"


def test_a_url_expires_at_its_expiry():
    params = signing.sign(SECRET, put_grant(expires=NOW + 60))
    signing.verify(SECRET, "PUT", KEY, params, NOW + 59.9)
    assert refusal(params, now=NOW + 60) == "SIGNATURE_EXPIRED"


def test_an_authentic_url_used_with_another_method_says_so():
    assert refusal(signing.sign(SECRET, put_grant()), method="GET") == "METHOD_NOT_ALLOWED"
    assert refusal(signing.sign(SECRET, get_grant()), method="PUT") == "METHOD_NOT_ALLOWED"
    assert refusal(signing.sign(SECRET, get_grant()), method="DELETE") == "METHOD_NOT_ALLOWED"


def test_an_authentic_url_used_on_another_object_says_so():
    assert refusal(signing.sign(SECRET, put_grant()), key="uploads/3f2a/other.mp4") == "WRONG_OBJECT"


def test_a_line_break_cannot_be_signed():
    with pytest.raises(ValueError):
        signing.sign(SECRET, get_grant(filename="a\nb.mp4"))


def test_local_store_urls_carry_the_grant_to_the_public_or_internal_base(tmp_path):
    store = LocalBlobStore(tmp_path, signing_key=SECRET, public_url="http://edge:8080", internal_url="http://media:50058")
    signed = store.sign("jobs/j1/mix/pt/mixed audio.wav", "PUT", 60, content_type="audio/wav", max_bytes=10)
    url = urlsplit(signed.url)
    assert (url.scheme, url.netloc, unquote(url.path)) == ("http", "edge:8080", "/blobs/jobs/j1/mix/pt/mixed audio.wav")
    assert signed.headers == {"Content-Type": "audio/wav"}
    assert signed.expire_time.timestamp() == pytest.approx(time.time() + 60, abs=2)
    grant = signing.verify(SECRET, "PUT", "jobs/j1/mix/pt/mixed audio.wav", dict(parse_qsl(url.query)), time.time())
    assert (grant.max_bytes, grant.content_type) == (10, "audio/wav")
    internal = urlsplit(store.sign("jobs/j1/a.wav", "GET", 60, internal=True).url)
    assert internal.netloc == "media:50058"


# ---------------------------------------------------------------------------- keys


@pytest.mark.parametrize(
    "key",
    ["uploads/3f2a/talk.mp4", "jobs/8f3a/tts/pt/speech_segment.00042.wav", "assets/1/v..2.mp4", "a", "jobs/x/ünïcode name.srt"],
)
def test_valid_keys(key):
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/etc/passwd",
        "uploads/../../etc/passwd",
        "..",
        "uploads/./x",
        "a//b",
        "a/b/",
        "a\\b",
        "a\x00b",
        "a\nb",
        ".incoming/x",
        "uploads/.hidden",
        "x" * 1025,
    ],
)
def test_keys_that_could_escape_or_alias_are_refused(key):
    with pytest.raises(InvalidKey):
        check_key(key)


def test_prefixes_end_with_a_slash_and_are_never_empty():
    assert check_prefix("jobs/8f3a/") == "jobs/8f3a/"
    for bad in ("", "/", "jobs/8f3a", "../"):
        with pytest.raises(InvalidKey):
            check_prefix(bad)


@pytest.mark.parametrize(
    ("filename", "safe"),
    [
        ("talk.mp4", "talk.mp4"),
        ("Mi vídeo (final).MOV", "Mi_v_deo_final_.MOV"),
        (".hidden.mp3", "hidden.mp3"),
        ("..", "file"),
        ("日本語.wav", "_.wav"),
        ("a" * 300 + ".mp3", "a" * 100 + ".mp3"),
    ],
)
def test_uploaded_file_names_become_safe_key_segments(filename, safe):
    assert key_safe_filename(filename) == safe
    check_key(f"uploads/x/{key_safe_filename(filename)}")


def test_content_disposition_has_an_ascii_fallback_and_the_exact_name():
    assert content_disposition(None, inline=True) == "inline"
    assert content_disposition("talk.mp4", inline=False) == "attachment; filename=\"talk.mp4\"; filename*=UTF-8''talk.mp4"
    value = content_disposition('Mi "vídeo".mp4', inline=False)
    assert value == "attachment; filename=\"Mi _v_deo_.mp4\"; filename*=UTF-8''Mi%20%22v%C3%ADdeo%22.mp4"
