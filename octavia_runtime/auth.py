"""Who is calling: principals, access rules and the credentials that prove them.

- A user proves who they are with a bearer access token (`authorization`
  metadata, the `Authorization` header through Envoy) or an API key
  (`x-api-key`). Only the auth service can check these: it holds the signing
  secret and the session store, so every other service asks it
  (`AuthService.AuthenticateToken`) on each call. That is what makes a log out
  take effect at once on every service.
- A service proves it is an Octavia service with a short-lived token signed
  with the shared service secret (`x-service-token`). Every service checks
  those itself.
- Which of these an RPC accepts is written in the API, as the
  `octavia.access.v1.access` method option; `access_of` reads it.
"""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

import grpc
import jwt
from google.protobuf import descriptor_pool
from octavia.access.v1 import access_pb2
from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from .errors import ApiError, error_info, permission_denied, unauthenticated

if TYPE_CHECKING:
    from google.protobuf.descriptor_pb2 import MethodOptions
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

SERVICE_TOKEN_HEADER = "x-service-token"
API_KEY_HEADER = "x-api-key"
SERVICE_TOKEN_TTL_S = 300
_SERVICE_AUDIENCE = "octavia-services"
_VERIFIED_SERVICE_TOKENS_MAX = 1000


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of the current RPC."""

    kind: str  # "user", "api_key", "service" or "anonymous"
    user_id: str = ""
    session: str = ""
    service: str = ""
    email_verified: bool = False

    @property
    def user(self) -> str:
        """The user's resource name, `users/{id}`."""
        return f"users/{self.user_id}"

    @property
    def is_user(self) -> bool:
        return self.kind in ("user", "api_key")


ANONYMOUS = Principal(kind="anonymous")
_current: contextvars.ContextVar[Principal] = contextvars.ContextVar("principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """The caller of the RPC being handled (set by the shared interceptor)."""
    return _current.get()


def set_principal(principal: Principal) -> contextvars.Token:
    return _current.set(principal)


# The caller's network address, worked out only when asked (rate limits by client address).
_client: contextvars.ContextVar[tuple[str, grpc.aio.ServicerContext | None]] = contextvars.ContextVar(
    "client", default=("", None)
)


def set_client(forwarded_for: str, context: grpc.aio.ServicerContext) -> None:
    _client.set((forwarded_for, context))


def client_address() -> str:
    """The address of the client of the current RPC.

    Through Envoy (use_remote_address) that is the last X-Forwarded-For entry,
    which Envoy itself appends; earlier entries come from the client and are
    not trusted. A direct gRPC caller is the connection's peer.
    """
    forwarded_for, context = _client.get()
    if forwarded_for:
        return forwarded_for.rsplit(",", 1)[-1].strip()
    peer = context.peer() if context is not None else ""  # "ipv4:127.0.0.1:5432", "ipv6:[::1]:5432"
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[")
    return rest.rpartition(":")[0] if kind == "ipv4" else peer


def current_user_id() -> str:
    """The id of the calling user; a service or anonymous caller is refused."""
    principal = _current.get()
    if not principal.is_user:
        raise permission_denied("USER_REQUIRED", "this call acts for a user: sign in with a user's token or API key")
    return principal.user_id


# --- access rules -----------------------------------------------------------------------------

PUBLIC, USER, SERVICE = access_pb2.ACCESS_PUBLIC, access_pb2.ACCESS_USER, access_pb2.ACCESS_SERVICE
# protoc's .pyi types an extension as a bare FieldDescriptor; this one extends MethodOptions with an Access.
_ACCESS = cast("_ExtensionFieldDescriptor[MethodOptions, access_pb2.Access]", access_pb2.access)
_access_cache: dict[str, int] = {}


def access_of(method: str) -> int:
    """The access rule of a method given as `/package.Service/Method`.

    Octavia methods without the option need a user; methods outside the
    Octavia API (health, reflection) are public.
    """
    try:
        return _access_cache[method]
    except KeyError:
        pass
    full_name = method.lstrip("/").replace("/", ".")
    if not full_name.startswith("octavia."):
        rule = PUBLIC
    else:
        try:
            options = descriptor_pool.Default().FindMethodByName(full_name).GetOptions()
            rule = options.Extensions[_ACCESS] or USER
        except KeyError:
            rule = USER
    _access_cache[method] = rule
    return rule


# --- service identity ---------------------------------------------------------------------------


class ServiceCredentials:
    """Mints and checks the tokens services present to each other."""

    def __init__(self, service: str, secret: str):
        self.service = service
        self._secret = secret
        self._token = ""
        self._renew_at = 0.0
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (its principal, its expiry)

    def token(self) -> str:
        now = time.time()
        if now >= self._renew_at:
            claims = {"sub": self.service, "aud": _SERVICE_AUDIENCE, "iat": int(now), "exp": int(now) + SERVICE_TOKEN_TTL_S}
            self._token = jwt.encode(claims, self._secret, algorithm="HS256")
            self._renew_at = now + SERVICE_TOKEN_TTL_S / 2
        return self._token

    def verify(self, token: str) -> Principal:
        """The service a token proves; its signature is checked once per process, its expiry every time.

        A peer renews its token every few minutes, so the memo holds a handful of tokens.
        """
        known = self._verified.get(token)
        if known is not None and known[1] > time.time():
            return known[0]
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=_SERVICE_AUDIENCE)
        except jwt.InvalidTokenError as exc:
            raise unauthenticated("INVALID_SERVICE_TOKEN", f"service token refused: {exc}") from None
        principal = Principal(kind="service", service=claims["sub"])
        if len(self._verified) >= _VERIFIED_SERVICE_TOKENS_MAX:
            self._verified.clear()
        self._verified[token] = (principal, float(claims.get("exp", 0)))
        return principal


# --- user credentials --------------------------------------------------------------------------


class Authenticator(Protocol):
    """Checks a user's access token or API key; raises ApiError(UNAUTHENTICATED) when bad."""

    async def authenticate(self, *, access_token: str = "", api_key: str = "") -> Principal: ...


class RemoteAuthenticator:
    """Asks the auth service about every user credential (no cache: log out is immediate)."""

    def __init__(self, channel: grpc.aio.Channel):
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)

    async def authenticate(self, *, access_token: str = "", api_key: str = "") -> Principal:
        request = auth_pb2.AuthenticateTokenRequest(access_token=access_token, api_key=api_key)
        try:
            reply = await self._stub.AuthenticateToken(request, timeout=5)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                info = error_info(exc)
                raise unauthenticated(info.reason if info else "UNAUTHENTICATED", exc.details() or "") from None
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:  # not even shaped like a credential (a 20 KB token)
                raise unauthenticated("INVALID_TOKEN", "the credential is not valid") from None
            raise ApiError(
                grpc.StatusCode.UNAVAILABLE, "AUTH_UNAVAILABLE", f"cannot check credentials now: {exc.code().name}"
            ) from None
        return Principal(
            kind="api_key" if reply.kind == auth_pb2.PRINCIPAL_KIND_API_KEY else "user",
            user_id=reply.user.removeprefix("users/"),
            session=reply.session,
            email_verified=reply.email_verified,
        )
