"""Malformed and hostile requests to every route and every gRPC method are refused cleanly.

The cases are generated (tests/integration/malformed.py) from the API's own
descriptors and http rules, so a new route or method is covered without
editing this test. For every answer: no 5xx but 503 (and 501 for a feature
not built yet, with its reason), and every refusal carries a reason (an
ErrorInfo, or Envoy's own `reason` for what it refuses itself). Afterwards
none of the user's jobs is left unfinished, no credit of theirs is held or
taken for work not done, and every service still answers SERVING.

Seeded: OCTAVIA_FUZZ_SEED=<n> replays a run, OCTAVIA_FUZZ_CASES=<n> sets the
cases per method and route (default 6).
"""

from __future__ import annotations

import base64
import json
import os
import random
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from octavia.access.v1 import access_pb2
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from octavia_runtime.config import SERVICES
from octavia_runtime.errors import error_info
from services.media.ffmpeg import ffmpeg_exe

from .conftest import PASSWORD, new_email
from .jobs_flow import create_job, uploaded_asset
from .malformed import HttpCase, Known, Method, broken_values, broken_wire, http_case, methods, plausible

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("OCTAVIA_FUZZ_SEED", "11"))
CASES = int(os.environ.get("OCTAVIA_FUZZ_CASES", "6"))
CREDITS = 5  # what the user keeps of the welcome credits: a few short jobs at most
# gRPC codes a refusal may carry; INTERNAL, UNKNOWN, DATA_LOSS and DEADLINE_EXCEEDED never.
FINE_CODES = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNIMPLEMENTED,
}  # fmt: skip


class Victim:
    """The user the requests are sent as, with real resources for them to name."""

    def __init__(self, rest: httpx.Client, known: Known, token: str):
        self.rest = rest
        self.known = known
        self.token = token

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def log_in_again(self) -> None:
        """A fuzzed LogOut or LogOutEverywhere may end the session: carry on with a new one."""
        reply = self.rest.post("/v1/auth/login", json={"email": self.known.email, "password": PASSWORD})
        assert reply.status_code == 200, reply.text
        self.token = reply.json()["tokens"]["accessToken"]


def _service_metadata(stack) -> tuple[tuple[str, str], ...]:
    return ((SERVICE_TOKEN_HEADER, ServiceCredentials("operator", stack.service_secret).token()),)


@pytest.fixture(scope="module")
def victim(stack, rest, tmp_path_factory, service_channel) -> Victim:
    email = new_email()
    assert rest.post("/v1/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 200
    tokens = rest.post("/v1/auth/login", json={"email": email, "password": PASSWORD}).json()
    user, token = tokens["user"]["name"], tokens["tokens"]["accessToken"]
    headers = {"authorization": f"Bearer {token}"}
    welcome = int(rest.get("/v1/balance", headers=headers).json()["balance"]["availableCredits"])
    billing_pb2_grpc.BillingServiceStub(service_channel("billing")).GrantCredits(
        billing_pb2.GrantCreditsRequest(user=user, credits=CREDITS - welcome, description="fuzzing: keep a few"),
        metadata=_service_metadata(stack),
    )
    audio = tmp_path_factory.mktemp("fuzz") / "tone.wav"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:duration=2", str(audio)], check=True)
    asset = uploaded_asset(rest, headers, Path(audio))
    known = Known(user=user, email=email, password=PASSWORD, asset=asset, job="")
    created = create_job(rest, headers, {"kind": "JOB_KIND_TRANSCRIPTION", "inputAsset": asset}, request_id=known.request_id)
    assert created.status_code == 200, created.text
    known.job = created.json()["job"]["name"]
    return Victim(rest, known, token)


def _grpc_problem(method: Method, call, what: str) -> str | None:
    """What is wrong with the answer of a gRPC call (None: a clean answer or a clean refusal)."""
    try:
        if method.streaming:
            next(iter(call))  # the first answer (or the refusal) is enough
        else:
            call.result()
        return None
    except StopIteration:
        return None
    except grpc.RpcError as exc:
        code = exc.code()
        if method.streaming and code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return None  # our own short deadline on a stream that had nothing to say yet
        info = error_info(exc)
        if code not in FINE_CODES:
            return f"{method.full_name} [{what}]: {code.name} {exc.details()!r}"
        if code == grpc.StatusCode.UNIMPLEMENTED and (info is None or info.reason != "NOT_IMPLEMENTED_YET"):
            return f"{method.full_name} [{what}]: UNIMPLEMENTED without NOT_IMPLEMENTED_YET"
        if info is None or not info.reason:
            return f"{method.full_name} [{what}]: {code.name} without an ErrorInfo reason ({exc.details()!r})"
        return None


def _call(channel: grpc.Channel, method: Method, payload: bytes, metadata):
    if method.streaming:
        stub = channel.unary_stream(method.path)
        return stub(payload, metadata=metadata, timeout=3)
    stub = channel.unary_unary(method.path)
    return stub.future(payload, metadata=metadata, timeout=15)


def _session_ended(method: Method, call) -> bool:
    if method.streaming:
        return False  # only LogOut and LogOutEverywhere end the session, and both are unary
    exc = call.exception()
    info = error_info(exc) if isinstance(exc, grpc.RpcError) else None
    return info is not None and info.reason == "SESSION_ENDED"


def _http_problem(case: HttpCase, response: httpx.Response) -> str | None:
    status = response.status_code
    if status < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{case.what}: {status} with a body that is not JSON: {response.text[:200]!r}"
    reasons = [d.get("reason") for d in body.get("details", []) if d.get("@type", "").endswith("ErrorInfo")]
    reason = (reasons or [body.get("reason")])[0]
    if status >= 500 and status != 503 and not (status == 501 and reason == "NOT_IMPLEMENTED_YET"):
        return f"{case.what}: {status} {str(body)[:300]}"
    if not reason:
        return f"{case.what}: {status} without a reason: {str(body)[:300]}"
    return None


def _send(base_url: str, case: HttpCase, headers: dict) -> httpx.Response:
    hdrs = {**headers, "content-type": "application/json"} if case.body is not None else headers
    with httpx.stream(
        case.method, base_url + case.path, params=case.params, content=case.body, headers=hdrs, timeout=15
    ) as response:
        if "text/event-stream" not in response.headers.get("content-type", ""):
            response.read()
        return response


def test_malformed_requests_get_clean_refusals_and_lose_nothing(stack, rest, edge_channel, service_channel, victim):
    rng = random.Random(SEED)
    problems: list[str] = []
    sent = 0
    every = methods()
    for method in every:
        for case in range(CASES):
            request = plausible(method, victim.known, rng)
            if case % 2 == 0:
                what, broken = broken_values(request, rng)
                payload = broken.SerializeToString()
            else:
                what, payload = broken_wire(request, rng)
            # As a user through the edge; internal methods also as a service, on their own port.
            targets = [(edge_channel, (("authorization", f"Bearer {victim.token}"),))]
            if method.access == access_pb2.ACCESS_SERVICE:
                service = method.full_name.split(".")[1]
                targets.append((service_channel(service), _service_metadata(stack)))
            for channel, metadata in targets:
                call = _call(channel, method, payload, metadata)
                sent += 1
                if problem := _grpc_problem(method, call, what):
                    problems.append(problem)
                if _session_ended(method, call):
                    victim.log_in_again()
            if method.http is not None:
                http = http_case(method, plausible(method, victim.known, rng), rng)
                sent += 1
                try:
                    response = _send(str(rest.base_url), http, victim.headers)
                except httpx.TimeoutException:
                    problems.append(f"{http.what}: no answer within 15 s ({http.method} {http.path[:100]})")
                    continue
                if problem := _http_problem(http, response):
                    problems.append(problem)
                if response.status_code == 401 and "SESSION_ENDED" in response.text:
                    victim.log_in_again()
    assert not problems, f"seed {SEED}, {sent} requests, {len(problems)} bad answers:\n" + "\n".join(problems[:40])

    # Nothing is left running, held or charged for work not done.
    jobs = _final_jobs(rest, victim)
    unfinished = [job["name"] for job in jobs if job["state"] not in ("STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED")]
    assert not unfinished, f"jobs left unfinished: {unfinished}"
    balance = rest.get("/v1/balance", headers=victim.headers).json()["balance"]
    charged = sum(int(job.get("creditsCharged", 0)) for job in jobs)
    assert int(balance["heldCredits"]) == 0
    assert int(balance["availableCredits"]) + charged == CREDITS
    assert all(int(job.get("creditsCharged", 0)) == 0 for job in jobs if job["state"] != "STATE_SUCCEEDED")

    for service in SERVICES:
        health = health_pb2_grpc.HealthStub(service_channel(service))
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING


def _final_jobs(rest: httpx.Client, victim: Victim, timeout: float = 240) -> list[dict]:
    """The user's jobs, once none is running (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        jobs, token = [], ""
        while True:
            page = rest.get("/v1/jobs", headers=victim.headers, params={"pageSize": 100, "pageToken": token}).json()
            jobs += page.get("jobs", [])
            token = page.get("nextPageToken", "")
            if not token:
                break
        running = [j for j in jobs if j["state"] not in ("STATE_SUCCEEDED", "STATE_FAILED", "STATE_CANCELLED")]
        if not running or time.monotonic() > deadline:
            return jobs
        time.sleep(1)


def test_a_forged_page_token_is_invalid_page_token_on_every_list(rest, victim):
    forged = [
        base64.urlsafe_b64encode(json.dumps({"t": "99999-01-01T00:00:00", "id": str(uuid.uuid4())}).encode()).decode(),
        base64.urlsafe_b64encode(b"[" * 100_000).decode()[:400],
        "x.y",
        "%ff%fe",
    ]
    for path in ("/v1/jobs", "/v1/assets", "/v1/transactions", "/v1/apiKeys", "/v1/voices"):
        for token in forged:
            reply = rest.get(path, headers=victim.headers, params={"pageToken": token})
            assert reply.status_code == 400, (path, token[:40], reply.text)
            assert "INVALID_PAGE_TOKEN" in reply.text or "MALFORMED_REQUEST" in reply.text, reply.text


def test_a_rest_body_over_a_mebibyte_is_a_json_413_before_any_service(rest):
    reply = rest.post(
        "/v1/auth/signup", content=b'{"email": "' + b"a" * (1024 * 1024) + b'"}', headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413
    assert reply.json()["reason"] == "request_payload_too_large"


def test_a_long_path_or_query_is_refused_with_a_reason_not_a_transport_error(rest, victim):
    for path, params in (("/v1/jobs/" + "j" * 20_000, None), ("/v1/assets", {"job": "jobs/" + "j" * 20_000})):
        reply = rest.get(path, headers=victim.headers, params=params)
        assert reply.status_code == 400, reply.text[:300]
        assert "VALUE_TOO_LONG" in reply.text and len(reply.text) < 2000


def test_hostile_credentials_and_request_ids_are_refused_or_replaced_never_a_server_error(rest, victim):
    for headers in ({"authorization": "Bearer " + "t" * 20_000}, {"x-api-key": "k" * 20_000}, {"authorization": "Bearer a.b.c"}):
        reply = rest.get("/v1/jobs", headers=headers)  # jobs asks auth, which refuses it
        assert reply.status_code == 401, (list(headers), reply.status_code, reply.text[:200])
    odd = rest.get("/v1/balance", headers={**victim.headers, "x-request-id": "r" * 20_000})
    assert odd.status_code == 200


def test_a_request_id_that_is_no_id_is_replaced_by_a_fresh_one(edge_channel, victim):
    stub = billing_pb2_grpc.BillingServiceStub(edge_channel)
    # (A 20 KB one is echoed by Envoy in the response headers, which is the client's own business.)
    for odd in ("r" * 200, "a b", "x/../y"):
        metadata = (("authorization", f"Bearer {victim.token}"), ("x-request-id", odd))
        _, call = stub.GetBalance.with_call(billing_pb2.GetBalanceRequest(), metadata=metadata)
        (given,) = [value for key, value in call.trailing_metadata() if key == "x-request-id"]
        assert given != odd and len(given) == 32
