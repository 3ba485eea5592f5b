"""Account rules: what counts as an email address and a strong enough password."""

import grpc
import pytest

from octavia_runtime.errors import ApiError
from services.auth.accounts import check_password_strength, normalize_email


def test_emails_are_trimmed_and_lower_cased():
    assert normalize_email("  Ada@Example.COM ") == "ada@example.com"


@pytest.mark.parametrize("email", ["", "ada", "ada@", "@example.com", "ada@example", "a b@example.com", "a@@example.com"])
def test_malformed_emails_are_invalid_argument(email):
    with pytest.raises(ApiError) as caught:
        normalize_email(email)
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "email" in caught.value.fields


@pytest.mark.parametrize("password", ["short1", "onlyletterslong", "1234567890", "x" * 129 + "1"])
def test_weak_passwords_are_refused_with_reason(password):
    with pytest.raises(ApiError) as caught:
        check_password_strength(password)
    assert caught.value.reason == "WEAK_PASSWORD"


def test_a_reasonable_password_passes():
    check_password_strength("correct horse 9")


class _MemorySessions:
    """Stands in for Valkey-backed Sessions: the token checks are what is under test here."""

    def __init__(self):
        self.active = {}

    async def get(self, session_id):
        return self.active.get(session_id)


def _accounts(ttl_s=900):
    from octavia_runtime.config import load
    from services.auth.accounts import Accounts

    config = load({"OCTAVIA_ACCESS_TOKEN_TTL_S": str(ttl_s)})
    return Accounts(store=None, sessions=_MemorySessions(), config=config)


async def test_a_remembered_token_is_still_refused_once_it_expires(monkeypatch):
    import time
    import uuid

    from services.auth.sessions import SessionInfo

    accounts = _accounts(ttl_s=60)
    user, session = uuid.uuid4(), uuid.uuid4()
    accounts.sessions.active[str(session)] = SessionInfo(str(user), "a@example.com", "a", False, "2026-01-01T00:00:00+00:00")
    token, _ = accounts._access_token(user, session, verified=False)
    assert (await accounts.authenticate(access_token=token)).user_id == str(user)

    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 61)
    with pytest.raises(ApiError) as caught:
        await accounts.authenticate(access_token=token)
    assert caught.value.reason == "TOKEN_EXPIRED"


async def test_a_token_whose_session_ended_is_refused_even_when_its_signature_is_remembered():
    import uuid

    from services.auth.sessions import SessionInfo

    accounts = _accounts()
    user, session = uuid.uuid4(), uuid.uuid4()
    accounts.sessions.active[str(session)] = SessionInfo(str(user), "a@example.com", "a", False, "2026-01-01T00:00:00+00:00")
    token, _ = accounts._access_token(user, session, verified=False)
    await accounts.authenticate(access_token=token)
    del accounts.sessions.active[str(session)]
    with pytest.raises(ApiError) as caught:
        await accounts.authenticate(access_token=token)
    assert caught.value.reason == "SESSION_ENDED"
