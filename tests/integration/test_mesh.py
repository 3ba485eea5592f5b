"""The mesh: every service healthy, reflective, measured, and guarded by the same auth."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc
from octavia.billing.v1 import billing_pb2, billing_pb2_grpc
from octavia.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from octavia.media.v1 import media_pb2, media_pb2_grpc
from octavia.transcribe.v1 import transcribe_pb2, transcribe_pb2_grpc
from octavia.translate.v1 import translate_pb2, translate_pb2_grpc
from octavia.tts.v1 import tts_pb2, tts_pb2_grpc

from octavia_runtime.config import SERVICES
from octavia_runtime.errors import error_info
from octavia_runtime.server import LIVENESS, public_api

from .conftest import PASSWORD

pytestmark = pytest.mark.integration
GRPCURL = str(Path(sys.executable).parent / "grpcurl")

# One real, authenticated read per service, against its own data or engines.
READS = {
    "auth": lambda ch: auth_pb2_grpc.AuthServiceStub(ch).GetMe(auth_pb2.GetMeRequest(), metadata=_md()),
    "jobs": lambda ch: jobs_pb2_grpc.JobServiceStub(ch).ListJobs(jobs_pb2.ListJobsRequest(), metadata=_md()),
    "billing": lambda ch: billing_pb2_grpc.BillingServiceStub(ch).GetBalance(billing_pb2.GetBalanceRequest(), metadata=_md()),
    "media": lambda ch: media_pb2_grpc.MediaServiceStub(ch).ListAssets(media_pb2.ListAssetsRequest(), metadata=_md()),
    "transcribe": lambda ch: transcribe_pb2_grpc.TranscribeServiceStub(ch).ListModels(
        transcribe_pb2.ListModelsRequest(), metadata=_md()
    ),
    "translate": lambda ch: translate_pb2_grpc.TranslateServiceStub(ch).ListLanguagePairs(
        translate_pb2.ListLanguagePairsRequest(), metadata=_md()
    ),
    "tts": lambda ch: tts_pb2_grpc.TtsServiceStub(ch).ListVoices(tts_pb2.ListVoicesRequest(), metadata=_md()),
}
_token: list[str] = [""]


def _md():
    return (("authorization", f"Bearer {_token[0]}"),)


def grpcurl(*args: str) -> str:
    done = subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reports_serving_on_its_own_port(service_channel, service):
    stub = health_pb2_grpc.HealthStub(service_channel(service))
    assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_lists_its_api_through_reflection(stack, service):
    listed = grpcurl(stack.endpoint(service).target, "list").split()
    assert "grpc.health.v1.Health" in listed
    assert any(name.startswith(f"octavia.{service}.v1.") for name in listed), listed


def test_grpcurl_through_envoy_lists_every_public_service(stack):
    listed = set(grpcurl(f"127.0.0.1:{stack.envoy_port}", "list").split())
    assert set(public_api()) <= listed
    assert len([name for name in public_api() if name.startswith("octavia.")]) == len(SERVICES)


def test_a_developer_calls_an_rpc_through_envoy_with_grpcurl_and_reflection(stack):
    email = f"grpcurl-{uuid.uuid4().hex[:8]}@example.com"
    body = json.dumps({"email": email, "password": PASSWORD})
    reply = json.loads(grpcurl("-d", body, f"127.0.0.1:{stack.envoy_port}", "octavia.auth.v1.AuthService/SignUp"))
    assert reply["user"]["email"] == email


def test_every_service_answers_a_real_authenticated_read_and_refuses_the_token_after_log_out(service_channel, signed_in, stack):
    _token[0] = signed_in.access_token
    replies = {service: READS[service](service_channel(service)) for service in SERVICES}
    assert replies["auth"].user.email == signed_in.email
    assert list(replies["jobs"].jobs) == [] and replies["jobs"].next_page_token == ""
    assert (
        replies["billing"].balance.available_credits == stack.welcome_credits
        and replies["billing"].balance.user == signed_in.user
    )
    assert list(replies["media"].assets) == []
    assert {m.name for m in replies["transcribe"].models} >= {"base", "tiny.en"}

    auth_pb2_grpc.AuthServiceStub(service_channel("auth")).LogOut(auth_pb2.LogOutRequest(), metadata=_md())
    for service in SERVICES:
        with pytest.raises(grpc.RpcError) as refused:
            READS[service](service_channel(service))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, service
        assert error_info(refused.value).reason == "SESSION_ENDED", service


@pytest.mark.parametrize("service", SERVICES)
def test_a_call_without_credentials_is_unauthenticated_on_every_service(service_channel, service):
    _token[0] = ""
    with pytest.raises(grpc.RpcError) as refused:
        READS[service](service_channel(service))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_internal_rpc_refuses_a_user_token(service_channel, signed_in):
    auth = auth_pb2_grpc.AuthServiceStub(service_channel("auth"))
    with pytest.raises(grpc.RpcError) as refused:
        auth.AuthenticateToken(
            auth_pb2.AuthenticateTokenRequest(access_token=signed_in.access_token), metadata=signed_in.metadata
        )
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_info(refused.value).reason == "SERVICE_CREDENTIAL_REQUIRED"


def test_a_feature_not_built_yet_says_which_feature_is_missing(service_channel, signed_in):
    jobs = jobs_pb2_grpc.JobServiceStub(service_channel("jobs"))
    burned = jobs_pb2.Job(
        kind=jobs_pb2.JOB_KIND_SUBTITLES,
        input_asset="assets/any",
        target_languages=["pt"],
        subtitle_options=jobs_pb2.SubtitleOptions(burn_in=True),
    )
    with pytest.raises(grpc.RpcError) as refused:
        jobs.CreateJob(jobs_pb2.CreateJobRequest(job=burned), metadata=signed_in.metadata)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not implemented yet" in refused.value.details() and "burning subtitles" in refused.value.details()


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_exports_rpc_metrics(stack, service_channel, service):
    health_pb2_grpc.HealthStub(service_channel(service)).Check(health_pb2.HealthCheckRequest())
    metrics = httpx.get(f"http://127.0.0.1:{stack.endpoint(service).metrics_port}/metrics").text
    assert f'octavia_rpc_requests_total{{code="OK",method="/grpc.health.v1.Health/Check",service="{service}"}}' in metrics
    assert "octavia_rpc_duration_seconds_bucket" in metrics


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_answers_liveness_apart_from_its_dependencies(service_channel, service):
    stub = health_pb2_grpc.HealthStub(service_channel(service))
    reply = stub.Check(health_pb2.HealthCheckRequest(service=LIVENESS))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
