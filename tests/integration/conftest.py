"""The integration tests run against the real local stack.

If `make up` is already running, the tests use it; otherwise they start it
(scripts/stack.py, the same code as `make up`) and stop it at the end.
OCTAVIA_KEEP_STACK=1 leaves a stack the tests started running.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.config import Config, load
from scripts import stack as local_stack

PASSWORD = "correct horse 9"


@pytest.fixture(scope="session")
def stack() -> Iterator[Config]:
    config = load()
    started = not local_stack.is_up(config)
    if started:
        local_stack.up(config)
    yield config
    if started and not os.environ.get("OCTAVIA_KEEP_STACK"):
        local_stack.down(config)


@pytest.fixture(scope="session")
def rest(stack: Config) -> Iterator[httpx.Client]:
    """A browser's view: REST/JSON through Envoy."""
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.envoy_port}", timeout=10) as client:
        yield client


@pytest.fixture(scope="session")
def edge_channel(stack: Config) -> Iterator[grpc.Channel]:
    """A gRPC client's view: native gRPC through Envoy's port."""
    with grpc.insecure_channel(f"127.0.0.1:{stack.envoy_port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def service_channel(stack: Config):
    """Direct channels to each service's own port, as other services use them."""
    channels: dict[str, grpc.Channel] = {}

    def channel(name: str) -> grpc.Channel:
        if name not in channels:
            channels[name] = grpc.insecure_channel(stack.endpoint(name).target)
        return channels[name]

    yield channel
    for open_channel in channels.values():
        open_channel.close()


@dataclass
class SignedIn:
    email: str
    user: str
    access_token: str
    refresh_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


@pytest.fixture
def signed_in(edge_channel: grpc.Channel) -> SignedIn:
    """A new user, signed up and logged in through gRPC."""
    auth = auth_pb2_grpc.AuthServiceStub(edge_channel)
    email = new_email()
    auth.SignUp(auth_pb2.SignUpRequest(email=email, password=PASSWORD))
    reply = auth.LogIn(auth_pb2.LogInRequest(email=email, password=PASSWORD))
    return SignedIn(email, reply.user.name, reply.tokens.access_token, reply.tokens.refresh_token)
