"""Wires the auth service into the shared runtime."""

from __future__ import annotations

from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.server import Runtime, Service

from .accounts import Accounts
from .api import AuthApi
from .sessions import Sessions
from .store import AuthStore


async def setup(rt: Runtime) -> None:
    sessions = Sessions(rt.redis)
    rt.background(sessions.follow(), name="sessions.follow")
    accounts = Accounts(AuthStore(rt.db), sessions, rt.config)
    rt.authenticator = accounts  # this service checks credentials itself; the others ask it
    rt.serve(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthApi(accounts))


SERVICE = Service(
    name="auth",
    apis=(auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,),
    setup=setup,
    redis=True,
    # Envoy routes reflection here, so `grpcurl <envoy> list` shows the whole API.
    reflect_catalogue=True,
)
