"""Accounts and sessions: the rules, with no gRPC in them.

- Passwords are hashed with argon2id, off the event loop (a hash takes tens of
  milliseconds of CPU by design).
- A session is a Postgres row (the source of truth, for refresh) plus an
  entry in `Sessions` (Valkey, remembered in process) while it is active.
  Every authenticated call on every service checks that entry through this
  service, so ending it (log out) refuses the session's access token at once.
- Sessions ended together (log out everywhere, a password change) end in
  Valkey inside the Postgres transaction that revokes them (and sets the new
  password): if Valkey fails nothing changes, and if only the commit fails the
  sessions are merely logged out. Ending them after the commit could leave
  them working, with nothing left to end on a retry.
- Access tokens are HS256 JWTs that name the user and the session; only this
  service holds their secret. A token's signature is checked once per process
  and remembered; its expiry and its session are checked on every call.
- An email address is verified with a random token sent in a link (stored
  hashed, single use, 24 hours). The email goes out off the request path, so
  a sign-up neither waits for nor fails with the SMTP server.
- Rate limits (Valkey, shared by every replica): sign-ups per client address;
  log-in attempts per client address; failed log-ins per account, checked
  before the password hash so a locked account does not even cost one, and
  counted for unknown emails alike so the limit tells nothing about which
  accounts exist; verification emails a user asks for again.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import argon2
import grpc
import jwt
import redis.asyncio as redis
from octavia.auth.v1 import auth_pb2

from octavia_runtime.auth import Principal
from octavia_runtime.config import Config, RateLimit
from octavia_runtime.errors import ApiError, invalid_argument, unauthenticated
from octavia_runtime.ratelimit import Limiter
from octavia_runtime.validation import max_length

from .apikeys import ApiKeys, require_session
from .mailer import Mailer
from .sessions import SessionInfo, Sessions
from .store import AuthStore, EmailTaken, UserRow

MAX_EMAIL = max_length(auth_pb2.SignUpRequest, "email")
MIN_PASSWORD, MAX_PASSWORD = 10, 128
MAX_DISPLAY_NAME = max_length(auth_pb2.SignUpRequest, "display_name")  # a default from the email may be longer
_EMAIL = re.compile(r"^[^@\s]+@[^@\s.]+(\.[^@\s.]+)+$")
_VERIFIED_TOKENS_MAX = 100_000
VERIFICATION_TTL = timedelta(hours=24)
# Enough for a lost or late email, too few to make Octavia send mail for someone.
RESEND_VERIFICATION_LIMIT = RateLimit(requests=3, period_s=3600)

_hasher = argon2.PasswordHasher()  # argon2id, RFC 9106 low-memory profile
# Verified against when the email is unknown, so a wrong email costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class Tokens:
    access_token: str
    access_expires: datetime
    refresh_token: str
    refresh_expires: datetime


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not email:
        raise invalid_argument({"email": "is required"})
    if len(email) > MAX_EMAIL or not _EMAIL.match(email):
        raise invalid_argument({"email": f"{email!r} is not a valid email address"}, reason="INVALID_EMAIL")
    return email


def check_password_strength(password: str, field: str = "password") -> None:
    problem = None
    if len(password) < MIN_PASSWORD:
        problem = f"must be at least {MIN_PASSWORD} characters long"
    elif len(password) > MAX_PASSWORD:
        problem = f"must be at most {MAX_PASSWORD} characters long"
    elif not re.search(r"[^\W\d_]", password) or not re.search(r"[\d\W_]", password):
        problem = "must contain at least one letter and at least one digit or symbol"
    if problem:
        raise invalid_argument({field: problem}, reason="WEAK_PASSWORD")


def _token_hash(token: str) -> bytes:
    """Refresh and verification tokens are 256 random bits: a fast hash is enough to store them."""
    return hashlib.sha256(token.encode()).digest()


def session_info(user: UserRow) -> SessionInfo:
    return SessionInfo(str(user.id), user.email, user.display_name, user.email_verified, user.created_at.isoformat())


@dataclass(frozen=True)
class Limits:
    login_account: Limiter
    login_address: Limiter
    signup_address: Limiter
    resend_verification: Limiter

    @classmethod
    def from_config(cls, cache: redis.Redis, config: Config) -> Limits:
        limits = config.rate_limits
        return cls(
            login_account=Limiter(cache, "login_account", limits["login_account"], "failed log-ins for this account"),
            login_address=Limiter(cache, "login_address", limits["login_address"], "log-in attempts from this address"),
            signup_address=Limiter(cache, "signup_address", limits["signup_address"], "sign-ups from this address"),
            resend_verification=Limiter(cache, "resend_verification", RESEND_VERIFICATION_LIMIT, "verification emails"),
        )


class Accounts:
    def __init__(self, store: AuthStore, sessions: Sessions, api_keys: ApiKeys, mailer: Mailer, limits: Limits, config: Config):
        self.store = store
        self.sessions = sessions
        self.api_keys = api_keys
        self.mailer = mailer
        self.limits = limits
        self.secret = config.jwt_secret
        self.access_ttl = timedelta(seconds=config.access_token_ttl_s)
        self.refresh_ttl = timedelta(seconds=config.refresh_token_ttl_s)
        # token -> (user id, session id, email verified, expiry): signatures checked once.
        self._verified: dict[str, tuple[str, str, bool, int]] = {}

    # --- sign up and log in ---

    async def sign_up(self, email: str, password: str, display_name: str, *, client: str) -> UserRow:
        email = normalize_email(email)
        check_password_strength(password)
        display_name = display_name.strip() or email.split("@", 1)[0]
        if len(display_name) > MAX_DISPLAY_NAME:
            raise invalid_argument({"display_name": f"must be at most {MAX_DISPLAY_NAME} characters long"})
        await self.limits.signup_address.hit(client)
        password_hash = await asyncio.to_thread(_hasher.hash, password)
        try:
            user = await self.store.create_user(email, display_name, password_hash)
        except EmailTaken:
            raise ApiError(
                grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN", f"an account with the email {email} already exists"
            ) from None
        await self._send_verification(user)
        return user

    async def log_in(self, email: str, password: str, *, client: str) -> tuple[UserRow, Tokens]:
        if not email.strip() or not password:
            missing = {name: "is required" for name, value in (("email", email), ("password", password)) if not value.strip()}
            raise invalid_argument(missing)
        email = email.strip().lower()
        await self.limits.login_address.hit(client)
        await self.limits.login_account.check(email)
        user = await self.store.user_by_email(email)
        # An unknown email costs the same hash check as a wrong password: no timing hint.
        matches = await asyncio.to_thread(_verify, user.password_hash if user else _DUMMY_HASH, password)
        if user is None or not matches:
            await self.limits.login_account.hit(email)
            raise unauthenticated("INVALID_CREDENTIALS", "the email or password is wrong")
        await self.limits.login_account.reset(email)  # the limit counts failures since the last success
        return user, await self._open_session(user)

    async def _open_session(self, user: UserRow) -> Tokens:
        refresh_token = secrets.token_urlsafe(32)
        refresh_expires = datetime.now(UTC) + self.refresh_ttl
        session_id = await self.store.create_session(user.id, refresh_expires, _token_hash(refresh_token))
        await self.sessions.open(str(session_id), session_info(user), refresh_expires)
        access_token, access_expires = self._access_token(user.id, session_id, user.email_verified)
        return Tokens(access_token, access_expires, refresh_token, refresh_expires)

    def _access_token(self, user_id: uuid.UUID, session_id: uuid.UUID, verified: bool) -> tuple[str, datetime]:
        now = int(time.time())
        expires = now + int(self.access_ttl.total_seconds())
        claims = {"sub": str(user_id), "sid": str(session_id), "ev": verified, "iat": now, "exp": expires}
        return jwt.encode(claims, self.secret, algorithm="HS256"), datetime.fromtimestamp(expires, UTC)

    # --- email verification ---

    async def _send_verification(self, user: UserRow) -> None:
        token = secrets.token_urlsafe(32)
        expires = datetime.now(UTC) + VERIFICATION_TTL
        await self.store.create_verification(user.id, _token_hash(token), expires)
        self.mailer.send_verification(user.email, user.display_name, token, expires)

    async def verify_email(self, token: str) -> UserRow:
        if not token:
            raise invalid_argument({"token": "is required"})
        outcome, user_id = await self.store.use_verification(_token_hash(token))
        if outcome == "unknown":
            raise invalid_argument({"token": "is not a verification token"}, reason="INVALID_VERIFICATION_TOKEN")
        if outcome == "used":
            raise invalid_argument({"token": "was already used"}, reason="VERIFICATION_TOKEN_USED")
        if outcome == "expired":
            raise invalid_argument(
                {"token": "has expired; ask for a new verification email"}, reason="VERIFICATION_TOKEN_EXPIRED"
            )
        assert user_id is not None, "a verified token names its user"
        user = await self.store.user_by_id(user_id)
        assert user is not None, "the user whose token was just used exists"
        # Every credential of the user says "verified" from this answer on, on every service.
        active = await self.store.active_sessions_of(user.id)
        await self.sessions.update([str(session) for session in active], session_info(user))
        await self.api_keys.owner_changed(user.id)
        return user

    async def resend_verification(self, user_id: str) -> None:
        user = await self.store.user_by_id(uuid.UUID(user_id))
        if user is None:
            raise unauthenticated("USER_DELETED", "the account of this credential no longer exists")
        if user.email_verified:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, "EMAIL_ALREADY_VERIFIED", f"{user.email} is already verified")
        await self.limits.resend_verification.hit(user_id)
        await self._send_verification(user)

    # --- sessions ---

    async def refresh(self, refresh_token: str) -> Tokens:
        if not refresh_token:
            raise invalid_argument({"refresh_token": "is required"})
        new_token = secrets.token_urlsafe(32)
        outcome, session_id, user_id = await self.store.rotate_refresh_token(_token_hash(refresh_token), _token_hash(new_token))
        if outcome == "reused":
            await self.sessions.end([str(session_id)])
            raise unauthenticated("REFRESH_TOKEN_REUSED", "this refresh token was already used; the session is now revoked")
        if outcome != "rotated":
            raise unauthenticated("INVALID_REFRESH_TOKEN", "the refresh token is unknown, expired or revoked")
        assert session_id is not None and user_id is not None, "a rotated token names its session and user"
        user = await self.store.user_by_id(user_id)
        expires = await self.store.session_expiry(session_id)
        if user is None or expires is None:
            raise unauthenticated("INVALID_REFRESH_TOKEN", "the session has ended")
        # Re-arm the session (Valkey may have lost it; Postgres is the source of truth).
        await self.sessions.open(str(session_id), session_info(user), expires)
        access_token, access_expires = self._access_token(user.id, session_id, user.email_verified)
        return Tokens(access_token, access_expires, new_token, expires)

    async def log_out(self, principal: Principal) -> None:
        await self.sessions.end([principal.session])  # first: the token is refused from here on
        await self.store.revoke_session(uuid.UUID(principal.session), "logged out")

    async def log_out_everywhere(self, user_id: str) -> int:
        async with self.store.revoking_sessions_of(uuid.UUID(user_id), "logged out everywhere") as ended:
            await self.sessions.end([str(session) for session in ended])
        return len(ended)

    async def me(self, principal: Principal) -> SessionInfo:
        info = await self.sessions.get(principal.session) if principal.kind == "user" else None
        if info is None:
            user = await self.store.user_by_id(uuid.UUID(principal.user_id))
            if user is None:
                raise unauthenticated("USER_DELETED", "the account of this credential no longer exists")
            info = session_info(user)
        return info

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        """Set a new password and log out the user's other sessions, together or not at all; this one goes on."""
        require_session(principal, "the password is changed")  # a leaked key must not lock its owner out
        user = await self.store.user_by_id(uuid.UUID(principal.user_id))
        if user is None or not await asyncio.to_thread(_verify, user.password_hash, current):
            raise unauthenticated("INVALID_CREDENTIALS", "the current password is wrong")
        check_password_strength(new, field="new_password")
        password_hash = await asyncio.to_thread(_hasher.hash, new)
        async with self.store.changing_password(user.id, password_hash, keep=uuid.UUID(principal.session)) as ended:
            await self.sessions.end([str(session) for session in ended])

    # --- checking credentials (the interceptor of every service comes here) ---

    async def authenticate(self, *, access_token: str = "", api_key: str = "") -> Principal:
        if api_key:
            return await self.api_keys.authenticate(api_key)
        user_id, session_id, verified, expires = self._verified_claims(access_token)
        if expires <= time.time():
            raise unauthenticated("TOKEN_EXPIRED", "the access token has expired; refresh it or log in again")
        info = await self.sessions.get(session_id)
        if info is None or info.user_id != user_id:
            raise unauthenticated("SESSION_ENDED", "this session has ended (logged out or revoked); log in again")
        return Principal(kind="user", user_id=user_id, session=session_id, email_verified=info.email_verified)

    def _verified_claims(self, token: str) -> tuple[str, str, bool, int]:
        claims = self._verified.get(token)
        if claims is None:
            try:
                decoded = jwt.decode(token, self.secret, algorithms=["HS256"], options={"require": ["exp", "sub", "sid"]})
            except jwt.ExpiredSignatureError:
                raise unauthenticated("TOKEN_EXPIRED", "the access token has expired; refresh it or log in again") from None
            except jwt.InvalidTokenError:
                raise unauthenticated("INVALID_TOKEN", "the access token is not valid") from None
            if len(self._verified) >= _VERIFIED_TOKENS_MAX:
                self._verified.clear()
            claims = self._verified[token] = (decoded["sub"], decoded["sid"], bool(decoded.get("ev")), int(decoded["exp"]))
        return claims


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except argon2.exceptions.VerificationError:
        return False
    except argon2.exceptions.InvalidHashError:
        return False
