"""The AuthService servicer: thin; it validates, calls Accounts or ApiKeys and shapes replies."""

from __future__ import annotations

from octavia.auth.v1 import auth_pb2, auth_pb2_grpc

from octavia_runtime.auth import client_address, current_principal, current_user_id
from octavia_runtime.errors import invalid_argument
from octavia_runtime.pagination import keyset_after, keyset_page, page_size
from octavia_runtime.resources import parse_name, timestamp

from .accounts import Accounts, Tokens, session_info
from .apikeys import ApiKeys
from .sessions import SessionInfo
from .store import ApiKeyRow, UserRow


def user_message(user: UserRow | SessionInfo) -> auth_pb2.User:
    info = session_info(user) if isinstance(user, UserRow) else user
    return auth_pb2.User(
        name=f"users/{info.user_id}",
        email=info.email,
        display_name=info.display_name,
        email_verified=info.email_verified,
        create_time=timestamp(info.created),
    )


def tokens_message(tokens: Tokens) -> auth_pb2.SessionTokens:
    return auth_pb2.SessionTokens(
        access_token=tokens.access_token,
        access_token_expire_time=timestamp(tokens.access_expires),
        refresh_token=tokens.refresh_token,
        refresh_token_expire_time=timestamp(tokens.refresh_expires),
        token_type="Bearer",
    )


def api_key_message(row: ApiKeyRow) -> auth_pb2.ApiKey:
    key = auth_pb2.ApiKey(
        name=f"apiKeys/{row.id}", display_name=row.display_name, prefix=row.prefix, create_time=timestamp(row.created_at)
    )
    if row.last_used_at is not None:
        key.last_use_time.CopyFrom(timestamp(row.last_used_at))
    return key


class AuthApi(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts, api_keys: ApiKeys):
        self.accounts = accounts
        self.api_keys = api_keys

    async def SignUp(self, request, context):
        user = await self.accounts.sign_up(request.email, request.password, request.display_name, client=client_address())
        return auth_pb2.SignUpResponse(user=user_message(user))

    async def LogIn(self, request, context):
        user, tokens = await self.accounts.log_in(request.email, request.password, client=client_address())
        return auth_pb2.LogInResponse(user=user_message(user), tokens=tokens_message(tokens))

    async def LogOut(self, request, context):
        principal = current_principal()
        if principal.kind != "user":
            raise invalid_argument({"authorization": "log out ends the session of an access token"})
        await self.accounts.log_out(principal)
        return auth_pb2.LogOutResponse()

    async def LogOutEverywhere(self, request, context):
        ended = await self.accounts.log_out_everywhere(current_user_id())
        return auth_pb2.LogOutEverywhereResponse(revoked_sessions=ended)

    async def RefreshToken(self, request, context):
        tokens = await self.accounts.refresh(request.refresh_token)
        return auth_pb2.RefreshTokenResponse(tokens=tokens_message(tokens))

    async def GetMe(self, request, context):
        current_user_id()  # a user's call, not a service's
        return auth_pb2.GetMeResponse(user=user_message(await self.accounts.me(current_principal())))

    async def ChangePassword(self, request, context):
        await self.accounts.change_password(current_principal(), request.current_password, request.new_password)
        return auth_pb2.ChangePasswordResponse()

    async def VerifyEmail(self, request, context):
        return auth_pb2.VerifyEmailResponse(user=user_message(await self.accounts.verify_email(request.token)))

    async def ResendVerificationEmail(self, request, context):
        await self.accounts.resend_verification(current_user_id())
        return auth_pb2.ResendVerificationEmailResponse()

    async def CreateApiKey(self, request, context):
        current_user_id()  # a user's call, not a service's
        row, secret = await self.api_keys.create(current_principal(), request.display_name)
        return auth_pb2.CreateApiKeyResponse(api_key=api_key_message(row), secret=secret)

    async def ListApiKeys(self, request, context):
        limit, after = page_size(request.page_size), keyset_after(request.page_token, "apiKeys")
        rows = await self.api_keys.page(current_user_id(), limit + 1, after)
        page, next_token = keyset_page(rows, limit, "apiKeys")
        return auth_pb2.ListApiKeysResponse(api_keys=[api_key_message(row) for row in page], next_page_token=next_token)

    async def DeleteApiKey(self, request, context):
        current_user_id()
        key_id = parse_name(request.name, "apiKeys")
        await self.api_keys.delete(current_principal(), key_id, request.name)
        return auth_pb2.DeleteApiKeyResponse()

    async def AuthenticateToken(self, request, context):
        if bool(request.access_token) == bool(request.api_key):
            raise invalid_argument({"access_token": "set exactly one of access_token and api_key"})
        principal = await self.accounts.authenticate(access_token=request.access_token, api_key=request.api_key)
        return auth_pb2.AuthenticateTokenResponse(
            user=principal.user,
            kind=auth_pb2.PRINCIPAL_KIND_API_KEY if principal.kind == "api_key" else auth_pb2.PRINCIPAL_KIND_USER,
            session=principal.session,
            email_verified=principal.email_verified,
        )
