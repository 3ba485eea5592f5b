"""Wires the auth service into the shared runtime."""

from __future__ import annotations

from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.server import Runtime, Service

from .accounts import Accounts, Limits
from .api import AuthApi
from .apikeys import ApiKeys
from .mailer import Mailer
from .sessions import Sessions
from .store import AuthStore


async def setup(rt: Runtime) -> None:
    assert rt.redis is not None, "SERVICE asks for Valkey, so the runtime connected it"
    store = AuthStore(rt.db)
    sessions = Sessions(rt.redis)
    api_keys = ApiKeys(store, rt.redis)
    mailer = Mailer(rt.config)
    rt.background(sessions.follow(), name="sessions.follow")
    rt.background(api_keys.follow(), name="api_keys.follow")
    rt.background(mailer.run(), name="mailer")
    accounts = Accounts(store, sessions, api_keys, mailer, Limits.from_config(rt.redis, rt.config), rt.config)
    rt.authenticator = accounts  # this service checks credentials itself; the others ask it
    rt.serve(auth_pb2_grpc.add_AuthServiceServicer_to_server, AuthApi(accounts, api_keys))


SERVICE = Service(
    name="auth",
    apis=(auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,),
    setup=setup,
    redis=True,
    # Envoy routes reflection here, so `grpcurl <envoy> list` shows the whole API.
    reflect_catalogue=True,
)
