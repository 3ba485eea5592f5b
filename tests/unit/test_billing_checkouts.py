"""Checkout redirects: a URL is taken only when a browser would go to the same origin as billing reads from it,
and that origin is exactly one of the allowed ones; anything else is refused with a short message."""

from __future__ import annotations

import grpc
import pytest

from octavia_runtime.config import load
from octavia_runtime.errors import ApiError
from services.billing import checkouts
from services.billing.checkouts import MAX_URL, Checkouts, allowed_origins, origin

ALLOWED = allowed_origins(("http://localhost:3000", "https://octavia.example", "http://[::1]:8080"), "http://127.0.0.1:8090")
PACK = "creditPacks/starter"


def a_checkouts() -> Checkouts:
    return Checkouts(store=None, ledger=None, provider=None, packs=load({}).credit_packs, origins=ALLOWED)


def refusal(success_url: str, cancel_url: str = "") -> ApiError:
    with pytest.raises(ApiError) as refused:
        a_checkouts()._validate(PACK, success_url, cancel_url, "")
    return refused.value


@pytest.mark.parametrize(
    ("url", "read_as"),
    [
        ("http://localhost:3000/paid", "http://localhost:3000"),
        ("http://localhost:3000", "http://localhost:3000"),
        ("http://localhost:3000?from=checkout", "http://localhost:3000"),
        ("http://localhost:3000#done", "http://localhost:3000"),
        ("HTTP://LocalHost:3000/Paid", "http://localhost:3000"),  # browsers lower-case scheme and host, not the path
        ("https://octavia.example:443/done/{CHECKOUT_ID}", "https://octavia.example"),  # the default port is no port
        ("https://octavia.example/a/@b?c=d@e", "https://octavia.example"),  # an @ after the authority is the path's
        ("http://127.0.0.1:8090/billing", "http://127.0.0.1:8090"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        ("http://[0:0:0:0:0:0:0:1]:8080/", "http://[::1]:8080"),  # written as browsers write it
        ("http://localhost:03000/", "http://localhost:3000"),
    ],
)
def test_a_redirect_on_an_allowed_origin_is_read_as_browsers_read_it_and_accepted(url, read_as):
    assert origin(url) == read_as and read_as in ALLOWED
    a_checkouts()._validate(PACK, url, url, "")


# Each of these is either read differently by browsers than by urllib, or cannot be read unambiguously at all.
MALFORMED = [
    "http://evil.example\\@localhost:3000/paid",  # browsers: host evil.example (\ is /); urlsplit: localhost:3000
    "http://localhost:3000\\@evil.example/",
    "http:/\\evil.example/",
    "http:\\\\evil.example/",
    "http://evil.example\\.localhost:3000/",
    "http://localhost:3000@evil.example/",  # user info: browsers go to evil.example
    "http://user:pass@localhost:3000/",
    "http://@localhost:3000/",
    "http://evil.example%2f@localhost:3000/",
    "http://local\thost:3000/",  # browsers drop tabs and newlines anywhere, urllib does not
    "http://localhost:3000/\npaid",
    "http://evil.example\r\n.localhost:3000/",
    "http://localhost:3000/pa\x00id",
    "http://localhost:3000/pa\x7fid",
    " http://localhost:3000/",  # browsers trim, urllib may not: neither is taken
    "http://localhost:3000/ ",
    "http://localhost:3000/a b",
    "\x01http://localhost:3000/",
    "//evil.example/",
    "/paid",
    "localhost:3000/paid",
    "javascript:alert(document.domain)//http://localhost:3000/",
    "JavaScript://localhost:3000/%0aalert(1)",
    "data:text/html,<script>alert(1)</script>",
    "ftp://localhost:3000/",
    "http:localhost:3000/",  # browsers: host localhost; not a form to guess at
    "http:/localhost:3000/",
    "http:///evil.example/",
    "http://",
    "http://:3000/",
    "http://localhost:/",
    "http://localhost:0/",
    "http://localhost:65536/",
    "http://localhost:3000:3000/",
    "http://[::1/",
    "http://[::1]x/",
    "http://[fe80::1%25eth0]:8080/",
    "http://[not:an:address]/",
    "http://%6cocalhost:3000/",  # browsers decode %-escapes in a host
    "http://localhost%3a3000/",
    "http://lоcalhost:3000/",  # a Cyrillic о
    "http://ｌocalhost:3000/",  # a fullwidth l, which browsers map to l
    "http://bücher.example/",
    "http://localhost:3000/ü",
    "http://" + "a" * 254 + "/",
    "http://localhost:3000/" + "a" * MAX_URL,
]


@pytest.mark.parametrize("url", MALFORMED)
def test_a_redirect_url_browsers_might_read_otherwise_is_invalid_argument_naming_the_field(url):
    assert origin(url) is None
    for field, sent in (("success_url", (url, "")), ("cancel_url", ("http://localhost:3000/paid", url))):
        refused = refusal(*sent)
        assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_ARGUMENT")
        assert list(refused.fields) == [field]
        assert len(refused.message) < 300, "a refusal never quotes the URL back"


NOT_ALLOWED = [
    "https://evil.example/phish",
    "http://localhost:3001/",
    "https://localhost:3000/",  # another scheme is another origin
    "http://localhost/",
    "http://localhost:80/",
    "http://localhost.:3000/",  # a trailing dot is another host to a browser
    "https://octavia.example.:443/",
    "https://octavia.example.evil.com/",
    "https://evil.octavia.example/",
    "http://octavia.example/",
    "http://127.0.0.1:3000/",  # the address of an allowed name is not that name
    "http://2130706433:8090/",  # 127.0.0.1 to a browser, but not written as allowed
    "http://0x7f.1:8090/",
    "http://[::2]:8080/",
    "http://[::ffff:127.0.0.1]:8090/",
    "http://xn--lcalhost-9ze:3000/",  # the Cyrillic look-alike in its ASCII form
]


@pytest.mark.parametrize("url", NOT_ALLOWED)
def test_a_redirect_elsewhere_than_an_allowed_origin_is_redirect_not_allowed(url):
    assert origin(url) is not None and origin(url) not in ALLOWED
    refused = refusal(url)
    assert (refused.code, refused.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REDIRECT_NOT_ALLOWED")
    assert list(refused.fields) == ["success_url"] and origin(url) in refused.message


def test_a_long_origin_is_quoted_short():
    long_host = ".".join(["a" * 60] * 4)
    refused = refusal(f"https://{long_host}/")
    assert refused.reason == "REDIRECT_NOT_ALLOWED"
    assert len(refused.fields["success_url"]) <= checkouts.QUOTED_MAX + len(" is not an allowed origin")
    assert refused.fields["success_url"].startswith("https://aaaa") and "..." in refused.fields["success_url"]


def test_a_20_kb_url_is_refused_without_being_echoed():
    refused = refusal("http://localhost:3000/" + "x" * 20_000)
    assert refused.reason == "INVALID_ARGUMENT" and "xxxxxxxxxx" not in refused.message


def test_configured_origins_are_read_the_same_way():
    assert allowed_origins(("HTTP://LOCALHOST:3000/", "https://*.example.com", "http://a\\@b"), "https://x.example:443") == {
        "http://localhost:3000",
        "https://x.example",
    }
