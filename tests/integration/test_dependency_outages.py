"""A dependency that is briefly away makes calls UNAVAILABLE (retryable), never INTERNAL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials
from octavia_runtime.errors import error_info
from scripts.stack import _valkey_bin
from tests.ports import free_ports

from .conftest import PASSWORD, new_email
from .replicas import replica

pytestmark = pytest.mark.integration


class Valkey:
    """A Valkey of the test's own, keeping its data in `folder` across restarts."""

    def __init__(self, port: int, folder: Path):
        self.port, self.folder = port, folder
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [str(_valkey_bin()), "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
             "--appendonly", "yes", "--save", ""],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def own_valkey(tmp_path) -> Iterator[Valkey]:
    server = Valkey(free_ports(1)[0], tmp_path)
    server.start()
    yield server
    server.stop()


def authenticate(stub, token: str, metadata) -> grpc.StatusCode:
    try:
        stub.AuthenticateToken(auth_pb2.AuthenticateTokenRequest(access_token=token), metadata=metadata, timeout=10)
        return grpc.StatusCode.OK
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            assert error_info(exc).reason == "DEPENDENCY_UNAVAILABLE"
        return exc.code()


def test_authenticate_token_is_unavailable_while_valkey_restarts_then_works_again(stack, tmp_path, own_valkey):
    metadata = ((SERVICE_TOKEN_HEADER, ServiceCredentials("jobs", stack.service_secret).token()),)
    with replica(stack, "auth", tmp_path, OCTAVIA_REDIS_URL=f"redis://127.0.0.1:{own_valkey.port}/0") as auth:
        stub = auth_pb2_grpc.AuthServiceStub(auth.channel)
        email = new_email()
        stub.SignUp(auth_pb2.SignUpRequest(email=email, password=PASSWORD))
        token = stub.LogIn(auth_pb2.LogInRequest(email=email, password=PASSWORD)).tokens.access_token
        assert authenticate(stub, token, metadata) == grpc.StatusCode.OK

        own_valkey.stop()
        seen = set()
        deadline = time.monotonic() + 15
        while grpc.StatusCode.UNAVAILABLE not in seen and time.monotonic() < deadline:
            seen.add(authenticate(stub, token, metadata))
            time.sleep(0.1)
        # While it is away: UNAVAILABLE (or, for a moment, the answer auth still remembered).
        assert grpc.StatusCode.UNAVAILABLE in seen and seen <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, seen

        own_valkey.start()  # back, with its data: the session is still there
        deadline = time.monotonic() + 30
        while (code := authenticate(stub, token, metadata)) != grpc.StatusCode.OK:
            assert code == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() < deadline, "auth did not recover after Valkey came back"
            time.sleep(0.2)
