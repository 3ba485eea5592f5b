"""The shared runtime's pieces that need no server."""

import base64
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from octavia.auth.v1 import auth_pb2

from octavia_runtime import pagination
from octavia_runtime.auth import PUBLIC, SERVICE, USER, ServiceCredentials, access_of
from octavia_runtime.db import migrations_in
from octavia_runtime.errors import ApiError, invalid_argument
from octavia_runtime.pending import pending
from octavia_runtime.server import public_api


def test_page_size_defaults_caps_and_refuses_negative():
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(10) == 10
    assert pagination.page_size(10_000) == pagination.MAX_PAGE_SIZE
    with pytest.raises(ApiError) as caught:
        pagination.page_size(-1)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_size" in caught.value.fields


def test_page_tokens_round_trip_and_garbage_is_invalid_page_token():
    cursor = {"after": "2026-01-01T00:00:00Z", "id": "x"}
    assert pagination.decode_token(pagination.encode_token(cursor, "jobs"), "jobs") == cursor
    assert pagination.decode_token("", "jobs") is None
    token = pagination.encode_token(cursor, "jobs")
    payload, mac = token.split(".")
    forged = base64.urlsafe_b64encode(b'{"after":"9999-12-31","id":"y"}').decode().rstrip("=") + "." + mac
    for garbage in ("%%%", "bm90IGpzb24", "a.b.c", forged, payload, pagination.encode_token([1, 2], "jobs")):  # type: ignore[arg-type]
        with pytest.raises(ApiError, match="page_token") as caught:
            pagination.decode_token(garbage, "jobs")
        assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_a_page_token_only_continues_its_own_list_and_filters():
    token = pagination.encode_token({"t": "2026-01-01T00:00:00+00:00", "id": str(uuid.uuid4())}, "jobs?state=1")
    assert pagination.keyset_after(token, "jobs?state=1") is not None
    for other in ("jobs?state=2", "assets?kind=0&job=", ""):
        with pytest.raises(ApiError, match="page_token"):
            pagination.keyset_after(token, other)


def test_replicas_sharing_the_service_secret_accept_each_others_page_tokens():
    pagination.use_secret("one secret, shared by every replica, 0123456789")
    token = pagination.encode_token({"offset": 50}, "voices")
    pagination.use_secret("another secret, of another deployment, 0123456")
    with pytest.raises(ApiError):
        pagination.decode_token(token, "voices")
    pagination.use_secret("one secret, shared by every replica, 0123456789")
    assert pagination.decode_token(token, "voices") == {"offset": 50}


def test_api_error_becomes_status_with_error_info_and_field_violations():
    status = invalid_argument({"email": "is required"}, reason="MISSING_EMAIL").to_status("auth.octavia")
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    ((key, raw),) = status.trailing_metadata
    assert key == "grpc-status-details-bin"
    detail = status_pb2.Status.FromString(raw)
    info, bad = error_details_pb2.ErrorInfo(), error_details_pb2.BadRequest()
    assert detail.details[0].Unpack(info) and info.reason == "MISSING_EMAIL" and info.domain == "auth.octavia"
    assert detail.details[1].Unpack(bad) and bad.field_violations[0].field == "email"


def test_access_rules_come_from_the_api():
    assert access_of("/octavia.auth.v1.AuthService/LogIn") == PUBLIC
    assert access_of("/octavia.auth.v1.AuthService/GetMe") == USER
    assert access_of("/octavia.auth.v1.AuthService/AuthenticateToken") == SERVICE
    assert access_of("/grpc.health.v1.Health/Check") == PUBLIC
    assert access_of("/octavia.auth.v1.AuthService/NoSuchMethod") == USER, "unknown octavia methods are not public"


def test_every_internal_rpc_is_service_only_and_has_no_http_route():
    from google.api import annotations_pb2

    for name in public_api():
        service = _service(name)
        for method in service.methods:
            rule = access_of(f"/{service.full_name}/{method.name}")
            has_route = method.GetOptions().HasExtension(annotations_pb2.http)
            if rule == SERVICE and method.name not in _OPERATOR_RPCS:
                assert not has_route, f"{method.full_name} is internal but routed through Envoy"


_OPERATOR_RPCS = {"GrantCredits"}  # internal, but operators call it through Envoy with the service key


def _service(full_name):
    from google.protobuf import descriptor_pool

    return descriptor_pool.Default().FindServiceByName(full_name)


def test_service_tokens_verify_and_foreign_ones_are_refused():
    jobs = ServiceCredentials("jobs", "s" * 40)
    assert jobs.verify(jobs.token()).service == "jobs"
    with pytest.raises(ApiError) as caught:
        ServiceCredentials("jobs", "t" * 40).verify(jobs.token())
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_a_remembered_service_token_is_still_refused_once_it_expires():
    import time

    import jwt

    billing = ServiceCredentials("billing", "s" * 40)
    expires = int(time.time()) + 2  # at least a second ahead, whatever the fraction of now
    token = jwt.encode({"sub": "jobs", "aud": "octavia-services", "exp": expires}, "s" * 40, algorithm="HS256")
    assert billing.verify(token).service == "jobs"
    assert billing.verify(token).service == "jobs", "the second check answers from memory"
    time.sleep(max(0.0, expires - time.time()) + 0.05)
    with pytest.raises(ApiError) as caught:
        billing.verify(token)
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED


async def test_pending_rpcs_answer_unimplemented_naming_the_feature():
    @pending(auth_pb2.DESCRIPTOR.services_by_name["AuthService"], {"CreateApiKey": "API keys"})
    class Api:
        pass

    with pytest.raises(ApiError) as caught:
        await Api().CreateApiKey(None, None)
    assert caught.value.code == grpc.StatusCode.UNIMPLEMENTED and "API keys" in caught.value.message
    with pytest.raises(KeyError):
        pending(auth_pb2.DESCRIPTOR.services_by_name["AuthService"], {"NoSuchRpc": "x"})(type("A", (), {}))


def test_every_service_has_well_named_migrations():
    from octavia_runtime.config import ROOT, SERVICES

    for name in SERVICES:
        folder = ROOT / "services" / name / "migrations"
        if folder.is_dir():
            assert [v for v, _ in migrations_in(folder)] == list(range(1, len(migrations_in(folder)) + 1))


def test_what_users_read_of_a_failure_names_no_server_path():
    from octavia_runtime.errors import without_paths
    from octavia_runtime.stages import error_status

    assert (
        without_paths("muxing /tmp/octavia-mux-1/mixed.wav with /srv/var/blobs/assets/a/b.mp4") == "muxing mixed.wav with b.mp4"
    )
    assert without_paths("No such file: '/root/.cache/voice.onnx'") == "No such file: 'voice.onnx'"
    kept = "see http://localhost:8080/v1/jobs, jobs/abc/def, 1/2 and /v1"
    assert without_paths(kept) == kept
    status = error_status("STAGE_CRASHED", "x failed: [Errno 2] /var/lib/octavia/tmp/a.wav" + "!" * 5000, "media.octavia", 14)
    assert "/var/lib" not in status.message and len(status.message) <= 1000
