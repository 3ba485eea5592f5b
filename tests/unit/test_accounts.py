"""Account rules: what counts as an email address and a strong enough password."""

import grpc
import pytest

from octavia_runtime.errors import ApiError
from octavia_runtime.ratelimit import RateLimited
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

    async def open(self, session_id, info, expires_at):
        self.active[session_id] = info


class _Limiter:
    """Records what a Limiter is asked; `over` makes every check and hit refuse."""

    def __init__(self, over=False):
        self.over = over
        self.calls = []

    async def _ask(self, call, key):
        self.calls.append((call, key))
        if self.over:
            raise RateLimited("attempts", 42)

    async def hit(self, key):
        await self._ask("hit", key)

    async def check(self, key):
        await self._ask("check", key)

    async def reset(self, key):
        self.calls.append(("reset", key))


def _limits(**over):
    from services.auth.accounts import Limits

    return Limits(**{name: _Limiter(over.get(name, False)) for name in Limits.__dataclass_fields__})


def _accounts(ttl_s=900, store=None, limits=None):
    from octavia_runtime.config import load
    from services.auth.accounts import Accounts

    config = load({"OCTAVIA_ACCESS_TOKEN_TTL_S": str(ttl_s)})
    return Accounts(store, _MemorySessions(), api_keys=None, mailer=None, limits=limits or _limits(), config=config)


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


class _Users:
    """A store with one user whose password is PASSWORD."""

    def __init__(self):
        import uuid
        from datetime import UTC, datetime

        from services.auth.accounts import _hasher
        from services.auth.store import UserRow

        self.user = UserRow(uuid.uuid4(), "ada@example.com", "Ada", _hasher.hash(PASSWORD), False, datetime.now(UTC))
        self.lookups = 0

    async def user_by_email(self, email):
        self.lookups += 1
        return self.user if email == self.user.email else None

    async def create_session(self, user_id, expires_at, refresh_hash):
        import uuid

        return uuid.uuid4()


PASSWORD = "correct horse 9"


async def test_a_locked_account_is_refused_before_any_password_hash(monkeypatch):
    import services.auth.accounts as accounts_module

    monkeypatch.setattr(accounts_module, "_verify", lambda *_: pytest.fail("a locked account must not cost a hash"))
    store, limits = _Users(), _limits(login_account=True)
    with pytest.raises(RateLimited) as caught:
        await _accounts(store=store, limits=limits).log_in("Ada@example.com", PASSWORD, client="198.51.100.7")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and caught.value.retry_after_s == 42
    assert store.lookups == 0
    assert limits.login_address.calls == [("hit", "198.51.100.7")], "every attempt counts against the address"


async def test_only_failed_log_ins_count_against_an_account_known_or_not():
    store, limits = _Users(), _limits()
    accounts = _accounts(store=store, limits=limits)
    for email in ("ada@example.com", "nobody@example.com"):
        with pytest.raises(ApiError) as caught:
            await accounts.log_in(email, "wrong password 1", client="198.51.100.7")
        assert caught.value.reason == "INVALID_CREDENTIALS"
        assert limits.login_account.calls[-2:] == [("check", email), ("hit", email)]
    await accounts.log_in("ada@example.com", PASSWORD, client="198.51.100.7")
    assert limits.login_account.calls[-2:] == [("check", "ada@example.com"), ("reset", "ada@example.com")]
    assert [call for call, _ in limits.login_address.calls] == ["hit"] * 3


async def test_sign_ups_over_the_address_limit_are_refused_before_any_work(monkeypatch):
    import services.auth.accounts as accounts_module

    class NoHashing:
        def hash(self, password):
            pytest.fail("a sign-up over the limit must not cost a hash")

    monkeypatch.setattr(accounts_module, "_hasher", NoHashing())
    limits = _limits(signup_address=True)
    with pytest.raises(RateLimited):
        await _accounts(limits=limits).sign_up("ada@example.com", PASSWORD, "", client="2001:db8::1")
    assert limits.signup_address.calls == [("hit", "2001:db8::1")]


class _PasswordStore(_Users):
    """A store with one user and two other sessions: a password change commits or rolls back as a whole."""

    def __init__(self):
        import uuid

        super().__init__()
        self.others = [uuid.uuid4(), uuid.uuid4()]
        self.outcome = None  # "committed" or "rolled back"

    async def user_by_id(self, user_id):
        self.lookups += 1
        return self.user if user_id == self.user.id else None

    def changing_password(self, user_id, password_hash, keep):
        assert keep not in self.others
        return self._transaction()

    def revoking_sessions_of(self, user_id, reason):
        return self._transaction()

    def _transaction(self):
        import contextlib

        store = self

        @contextlib.asynccontextmanager
        async def transaction():
            try:
                yield list(store.others)
            except BaseException:
                store.outcome = "rolled back"
                raise
            store.outcome = "committed"

        return transaction()


class _EndingSessions(_MemorySessions):
    """Sessions whose `end` fails as Valkey does when it is down, when `down` is set."""

    def __init__(self, down=False):
        super().__init__()
        self.down = down
        self.ended = []

    async def end(self, session_ids):
        import redis.exceptions

        if self.down:
            raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
        self.ended.extend(session_ids)


def _password_change(down=False):
    import uuid

    from octavia_runtime.auth import Principal

    store = _PasswordStore()
    accounts = _accounts(store=store)
    accounts.sessions = _EndingSessions(down)
    caller = Principal(kind="user", user_id=str(store.user.id), session=str(uuid.uuid4()))
    return accounts, store, caller


async def test_changing_the_password_ends_the_other_sessions_in_valkey_before_the_change_commits():
    accounts, store, caller = _password_change()
    await accounts.change_password(caller, PASSWORD, "a brand new one 7")
    assert store.outcome == "committed"
    assert accounts.sessions.ended == [str(s) for s in store.others] and caller.session not in accounts.sessions.ended


async def test_a_password_change_whose_sessions_cannot_be_ended_changes_nothing():
    import redis.exceptions

    accounts, store, caller = _password_change(down=True)
    with pytest.raises(redis.exceptions.ConnectionError):  # the runtime answers UNAVAILABLE: a retry may work
        await accounts.change_password(caller, PASSWORD, "a brand new one 7")
    assert store.outcome == "rolled back"


async def test_log_out_everywhere_is_revoked_only_once_the_sessions_are_ended_in_valkey():
    import redis.exceptions

    accounts, store, caller = _password_change(down=True)
    with pytest.raises(redis.exceptions.ConnectionError):  # so a retry still finds every session to end
        await accounts.log_out_everywhere(caller.user_id)
    assert store.outcome == "rolled back"
    accounts.sessions.down = False
    assert await accounts.log_out_everywhere(caller.user_id) == 2 and store.outcome == "committed"
    assert accounts.sessions.ended == [str(s) for s in store.others]


@pytest.mark.parametrize("kind", ["api_key", "service", "anonymous"])
async def test_only_a_signed_in_session_may_change_the_password_and_that_is_checked_first(monkeypatch, kind):
    import uuid

    import services.auth.accounts as accounts_module
    from octavia_runtime.auth import Principal

    monkeypatch.setattr(accounts_module, "_verify", lambda *_: pytest.fail("a key must not even cost a hash"))
    accounts, store, _ = _password_change()
    key = Principal(kind=kind, user_id=str(store.user.id), session=f"apiKeys/{uuid.uuid4()}")
    for current in (PASSWORD, "wrong password 1", ""):
        with pytest.raises(ApiError) as caught:
            await accounts.change_password(key, current, "short")
        assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ACCESS_TOKEN_REQUIRED")
        assert caught.value.message == "the password is changed from a signed-in session, not with an API key"
    assert (store.lookups, store.outcome) == (0, None)
