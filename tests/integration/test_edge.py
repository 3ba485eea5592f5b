"""Envoy at the edge: JSON errors for everything, status codes that mean something, CORS."""

from __future__ import annotations

import pytest

from .test_auth_flow import reason_of

pytestmark = pytest.mark.integration


def test_a_body_that_is_not_json_gets_a_json_400(rest):
    reply = rest.post("/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert reply.status_code == 400
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["message"]


def test_an_unknown_route_gets_a_json_404(rest):
    reply = rest.get("/v1/no-such-thing")
    assert reply.status_code == 404
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.json()["code"] == 404


def test_a_grpc_error_becomes_the_matching_http_status_with_its_reason(rest, signed_in):
    missing = rest.get("/v1/auth/me")
    assert missing.status_code == 401 and reason_of(missing.json()) == "CREDENTIALS_MISSING"

    not_found = rest.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=signed_in.headers)
    assert not_found.status_code == 404 and reason_of(not_found.json()) == "JOB_NOT_FOUND"

    bad_name = rest.get("/v1/jobs/not-a-uuid", headers=signed_in.headers)
    assert bad_name.status_code == 400 and reason_of(bad_name.json()) == "INVALID_ARGUMENT"

    negative = rest.get("/v1/jobs", params={"pageSize": -1}, headers=signed_in.headers)
    assert negative.status_code == 400
    assert any(v["field"] == "page_size" for d in negative.json()["details"] for v in d.get("fieldViolations", []))

    burned = {
        "kind": "JOB_KIND_SUBTITLES",
        "inputAsset": "assets/any",
        "targetLanguages": ["pt"],
        "subtitleOptions": {"burnIn": True},
    }
    later = rest.post("/v1/jobs", json={"job": burned}, headers=signed_in.headers)
    assert later.status_code == 501 and reason_of(later.json()) == "NOT_IMPLEMENTED_YET"


def test_each_service_answers_through_envoy_rest(rest, signed_in, stack):
    for path in ("/v1/jobs", "/v1/balance", "/v1/assets", "/v1/transcribe/models", "/v1/languagePairs", "/v1/voices"):
        reply = rest.get(path, headers=signed_in.headers)
        assert reply.status_code == 200, (path, reply.text)
    assert rest.get("/v1/balance", headers=signed_in.headers).json()["balance"]["availableCredits"] == str(stack.welcome_credits)


def test_the_configured_browser_origin_may_call_and_others_may_not(stack, rest):
    allowed = stack.cors_origins[0]
    preflight = rest.options(
        "/v1/auth/login",
        headers={"origin": allowed, "access-control-request-method": "POST", "access-control-request-headers": "content-type"},
    )
    assert preflight.headers.get("access-control-allow-origin") == allowed
    other = rest.options(
        "/v1/auth/login",
        headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
    )
    assert "access-control-allow-origin" not in other.headers
