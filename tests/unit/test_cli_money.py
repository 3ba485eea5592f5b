"""The `octavia` commands for accounts and money: credits, prices, buying,
API keys, email verification, passwords and operators' grants. Each runs
through `main` against a fake of the REST API (the google.api.http rules of
auth.proto and billing.proto, JSON as Envoy writes it), and the tests say what
was sent and what the user reads."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import octavia_cli.__main__ as cli_main
from octavia_cli.cli import UsageError, resource_name, verification_token
from octavia_cli.client import ApiError, Client
from octavia_cli.commands import error_hint, money
from octavia_cli.credentials import CredentialStore, Session
from octavia_runtime.auth import ServiceCredentials

API = "http://127.0.0.1:8080"
SECRET = "operator-test-secret-0123456789abcdef"


def _stamp(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat().replace("+00:00", "Z")


def _session(expires_in: timedelta = timedelta(minutes=15)) -> Session:
    return Session.from_tokens(
        {"accessToken": "access-1", "accessTokenExpireTime": _stamp(expires_in),
         "refreshToken": "refresh-1", "refreshTokenExpireTime": _stamp(timedelta(days=30))},
        email="ada@example.com",
    )  # fmt: skip


def _status(code: int, message: str, reason: str, domain: str, *extra: dict) -> dict:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason, "domain": domain, "metadata": {}}
    return {"code": code, "message": message, "details": [info, *extra]}


class FakeApi:
    """Answers by (method, path): a JSON body (200), a (status, body) or
    (status, body, headers) tuple, bytes (a 200 Server-Sent Events stream), or
    a list of those given out in turn (the last one repeats). Records every
    request."""

    def __init__(self, routes: dict):
        self.routes = {key: list(value) if isinstance(value, list) else [value] for key, value in routes.items()}
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answers = self.routes.get((request.method, request.url.path))
        if answers is None:
            return httpx.Response(404, json={"code": 404, "message": f"no route {request.method} {request.url.path}"})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, bytes):
            return httpx.Response(200, content=answer, headers={"content-type": "text/event-stream"})
        status, body, headers = (200, answer, {}) if isinstance(answer, dict) else (*answer, {})[:3]
        return httpx.Response(status, json=body, headers=headers)

    def sent(self, method: str, path: str) -> list[httpx.Request]:
        return [r for r in self.requests if (r.method, r.url.path) == (method, path)]

    def body(self, method: str, path: str) -> dict:
        (request,) = self.sent(method, path)
        return json.loads(request.content)


@pytest.fixture
def store(tmp_path) -> CredentialStore:
    return CredentialStore(tmp_path / "config")


@pytest.fixture
def signed_in(store) -> CredentialStore:
    store.put(API, _session())
    return store


@pytest.fixture
def octavia(monkeypatch, capsys, store):
    """`octavia ARGV...` against a FakeApi: (exit status, stdout, stderr)."""
    monkeypatch.setenv("OCTAVIA_API_URL", API)
    monkeypatch.delenv("OCTAVIA_API_KEY", raising=False)
    monkeypatch.delenv("OCTAVIA_SERVICE_SECRET", raising=False)

    def run(fake: FakeApi, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        monkeypatch.setattr(cli_main, "Client", lambda api, **kw: Client(api, store, transport=httpx.MockTransport(fake), **kw))
        if stdin is not None:
            monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        status = cli_main.main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


@pytest.fixture
def sleeps(monkeypatch) -> list[float]:
    """time.sleep, recorded instead of slept."""
    slept: list[float] = []
    monkeypatch.setattr("octavia_cli.commands.time.sleep", slept.append)
    return slept


# --------------------------------------------------------------------------- transactions


def _transaction(n: int, reason: str, available: str, held: str, reference: str, description: str) -> dict:
    return {"name": f"transactions/t{n}", "user": "users/1", "reason": f"TRANSACTION_REASON_{reason}",
            "availableChange": available, "heldChange": held, "reference": reference, "description": description,
            "createTime": "2025-03-01T10:00:00Z"}  # fmt: skip


def test_transactions_are_a_table_of_signed_changes_newest_first(octavia, signed_in):
    fake = FakeApi({("GET", "/v1/transactions"): [
        {"transactions": [_transaction(3, "CAPTURE", "0", "-12", "jobs/j1", "Subtitles, 1 min 30 s, 1 language: pt")],
         "nextPageToken": "page-2"},
        {"transactions": [_transaction(2, "HOLD", "-12", "12", "jobs/j1", ""),
                          _transaction(1, "PURCHASE", "1000", "0", "checkouts/c1", "Starter pack")]},
    ]})  # fmt: skip

    status, out, _ = octavia(fake, "transactions")

    assert status == 0
    first, second = fake.sent("GET", "/v1/transactions")
    assert dict(first.url.params) == {"page_size": "20"}
    assert dict(second.url.params) == {"page_size": "20", "page_token": "page-2"}
    assert first.headers["authorization"] == "Bearer access-1"
    header, *rows = out.splitlines()
    assert header.split() == ["TIME", "REASON", "AVAILABLE", "HELD", "REFERENCE", "DESCRIPTION"]
    assert rows[0].split()[2:7] == ["capture", "0", "-12", "jobs/j1", "Subtitles,"]
    assert rows[1].split()[2:6] == ["hold", "-12", "+12", "jobs/j1"]
    assert rows[2].split()[2:] == ["purchase", "+1000", "0", "checkouts/c1", "Starter", "pack"]
    assert rows[0].endswith("Subtitles, 1 min 30 s, 1 language: pt")
    assert len({row.index("jobs/j1") for row in rows[:2]}) == 1, "columns line up"


def test_transactions_by_reason_stop_at_the_limit_and_print_json(octavia, signed_in):
    page = {"transactions": [_transaction(n, "GRANT", "5", "0", "", "") for n in range(3)], "nextPageToken": "more"}
    fake = FakeApi({("GET", "/v1/transactions"): page})

    status, out, _ = octavia(fake, "transactions", "--reason", "grant", "--limit", "2", "--json")

    assert status == 0
    (request,) = fake.sent("GET", "/v1/transactions")
    assert dict(request.url.params) == {"reason": "TRANSACTION_REASON_GRANT", "page_size": "2"}
    assert [t["name"] for t in json.loads(out)["transactions"]] == ["transactions/t0", "transactions/t1"]


# --------------------------------------------------------------------------- prices


PRICES = {"prices": [
    {"kind": "JOB_KIND_TRANSCRIPTION", "creditsPerMinute": "10", "creditsPerMinutePerTargetLanguage": "0"},
    {"kind": "JOB_KIND_SUBTITLES", "creditsPerMinute": "10", "creditsPerMinutePerTargetLanguage": "5"},
    {"kind": "JOB_KIND_VIDEO_DUBBING", "creditsPerMinute": "30", "creditsPerMinutePerTargetLanguage": "40"},
]}  # fmt: skip
PACKS = {"creditPacks": [
    {"name": "creditPacks/starter", "displayName": "Starter", "credits": "1000", "priceMinorUnits": "1000", "currencyCode": "USD"},
    {"name": "creditPacks/studio", "displayName": "Studio", "credits": "30000", "priceMinorUnits": "20000", "currencyCode": "USD"},
]}  # fmt: skip


def test_prices_show_credits_per_minute_and_the_packs_without_logging_in(octavia):
    fake = FakeApi({("GET", "/v1/prices"): PRICES, ("GET", "/v1/creditPacks"): PACKS})

    status, out, _ = octavia(fake, "prices")

    assert status == 0
    assert all("authorization" not in r.headers for r in fake.requests), "public lists: no session needed"
    lines = out.splitlines()
    prices = lines.index("Credits per minute of media:")
    assert lines[prices + 1].split() == ["JOB", "KIND", "PER", "MINUTE", "+", "PER", "TARGET", "LANGUAGE"]
    assert lines[prices + 3].split() == ["subtitles", "10", "5"]
    assert lines[prices + 4].split() == ["video", "dubbing", "30", "40"]
    packs = lines.index("Credit packs (`octavia buy PACK`):")
    assert lines[packs + 1].split() == ["PACK", "NAME", "CREDITS", "PRICE"]
    assert lines[packs + 2].split() == ["starter", "Starter", "1000", "10.00", "USD"]
    assert lines[packs + 3].split() == ["studio", "Studio", "30000", "200.00", "USD"]


def test_money_is_shown_in_the_currencys_own_unit():
    assert money("999", "USD") == "9.99 USD"
    assert money(5, "EUR") == "0.05 EUR"
    assert money("500", "JPY") == "500 JPY"
    assert money(1234, "KWD") == "1.234 KWD"


# --------------------------------------------------------------------------- buying


def _checkout(state: str) -> dict:
    return {"name": "checkouts/c1", "user": "users/1", "creditPack": "creditPacks/starter", "credits": "1000",
            "priceMinorUnits": "1000", "currencyCode": "USD", "state": f"CHECKOUT_STATE_{state}",
            "url": "https://pay.example.com/c/abc", "createTime": "2025-03-01T10:00:00Z",
            "expireTime": "2025-03-01T11:00:00Z"}  # fmt: skip


def test_buying_a_pack_shows_the_payment_page_and_waits_for_the_credits(octavia, signed_in, sleeps, monkeypatch):
    opened: list[str] = []
    monkeypatch.setattr("octavia_cli.commands.webbrowser.open", opened.append)
    fake = FakeApi({
        ("POST", "/v1/checkouts"): {"checkout": _checkout("OPEN")},
        ("GET", "/v1/checkouts/c1"): [{"checkout": _checkout("OPEN")}, (503, {"code": 14, "message": "unavailable"}),
                                      {"checkout": _checkout("COMPLETED")}],
        ("GET", "/v1/balance"): {"balance": {"user": "users/1", "availableCredits": "1088", "heldCredits": "0"}},
    })  # fmt: skip

    status, out, err = octavia(fake, "buy", "starter", "--open")

    assert status == 0
    body = fake.body("POST", "/v1/checkouts")
    assert body.pop("requestId")
    assert body == {"creditPack": "creditPacks/starter", "successUrl": f"{API}/"}
    assert out.splitlines() == [
        "https://pay.example.com/c/abc",
        "paid: 1000 credits added",
        "1088 credits available, 0 held by running jobs",
    ]
    assert "checkouts/c1: 1000 credits for 10.00 USD. Pay on this page" in err
    assert opened == ["https://pay.example.com/c/abc"]
    assert sleeps == [2.0, 2.0, 2.0], "a poll every 2 s; a 503 on the way is waited out"


def test_the_success_url_can_be_given_and_the_browser_stays_closed_without_open(octavia, signed_in, sleeps, monkeypatch):
    monkeypatch.setattr("octavia_cli.commands.webbrowser.open", lambda url: pytest.fail("opened a browser"))
    fake = FakeApi({("POST", "/v1/checkouts"): {"checkout": _checkout("EXPIRED")}})

    octavia(fake, "buy", "creditPacks/studio", "--success-url", "https://app.example.com/paid")

    body = fake.body("POST", "/v1/checkouts")
    assert (body["creditPack"], body["successUrl"]) == ("creditPacks/studio", "https://app.example.com/paid")


def test_a_success_url_the_api_does_not_trust_is_explained(octavia, signed_in):
    refusal = _status(3, "success_url: http://localhost:8080 is not an allowed origin", "REDIRECT_NOT_ALLOWED", "billing.octavia")
    fake = FakeApi({("POST", "/v1/checkouts"): (400, refusal)})

    status, _, err = octavia(fake, "buy", "starter")

    assert status == 1
    assert "is not an allowed origin [REDIRECT_NOT_ALLOWED]" in err
    assert "Give --success-url a page on an origin the API trusts" in err


def test_a_checkout_that_expires_unpaid_says_so(octavia, signed_in, sleeps):
    fake = FakeApi({
        ("POST", "/v1/checkouts"): {"checkout": _checkout("OPEN")},
        ("GET", "/v1/checkouts/c1"): {"checkout": _checkout("EXPIRED")},
    })  # fmt: skip

    status, out, err = octavia(fake, "buy", "starter")

    assert status == 1
    assert "checkouts/c1 expired before it was paid; nothing was charged" in err
    assert not fake.sent("GET", "/v1/balance")


def test_ctrl_c_stops_waiting_and_says_how_to_check_later(octavia, signed_in, monkeypatch):
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("octavia_cli.commands.time.sleep", interrupted)
    fake = FakeApi({("POST", "/v1/checkouts"): {"checkout": _checkout("OPEN")}})

    status, out, err = octavia(fake, "buy", "starter")

    assert status == 130
    assert out.strip() == "https://pay.example.com/c/abc"
    assert "stopped waiting; checkouts/c1 can still be paid" in err
    assert "`octavia checkout checkouts/c1` shows whether it was paid" in err


def test_a_checkout_is_shown_by_name_or_id(octavia, signed_in):
    fake = FakeApi({("GET", "/v1/checkouts/c1"): {"checkout": _checkout("OPEN")}})

    assert octavia(fake, "checkout", "checkouts/c1")[1] == octavia(fake, "checkout", "c1")[1]
    status, out, _ = octavia(fake, "checkout", "c1")
    assert status == 0
    assert out.splitlines()[0] == "checkouts/c1  open"
    assert "creditPacks/starter: 1000 credits for 10.00 USD" in out
    assert "pay at     https://pay.example.com/c/abc (until " in out


# --------------------------------------------------------------------------- translate: quotes and refusals


ASSET = {"name": "assets/a1", "sizeBytes": "2400000", "mediaInfo": {"duration": "84.500s", "streams": []}}


@pytest.fixture
def talk(tmp_path, monkeypatch):
    """A media file whose upload (a presigned PUT, not the API) is only recorded."""
    path = tmp_path / "talk.mp4"
    path.write_bytes(b"\0" * 1000)
    monkeypatch.setattr(Client, "put_file", lambda self, url, headers, path, progress=None: None)
    return path


def _translate_api(create_job) -> FakeApi:
    return FakeApi({
        ("POST", "/v1/uploads"): {"upload": {"name": "uploads/u1", "uploadUrl": f"{API}/blobs/u1"}},
        ("POST", "/v1/uploads/u1:complete"): {"asset": ASSET},
        ("POST", "/v1/quotes:compute"): {"quote": {"credits": "22", "availableCredits": "8", "sufficient": False}},
        ("POST", "/v1/jobs"): create_job,
    })  # fmt: skip


def test_translate_prices_the_job_before_creating_it(octavia, signed_in, talk, tmp_path):
    fake = _translate_api({"job": {"name": "jobs/j1", "kind": "JOB_KIND_SUBTITLES", "creditsHeld": "22"}})
    final = {"event": {"jobName": "jobs/j1", "state": "STATE_SUCCEEDED", "final": True, "sequence": "1"}}
    fake.routes[("GET", "/v1/jobs/j1:watch")] = [f"data: {json.dumps(final)}\n\n".encode()]
    fake.routes[("GET", "/v1/jobs/j1")] = [{"job": {"name": "jobs/j1", "state": "STATE_SUCCEEDED", "artifacts": []}}]

    status, _, err = octavia(fake, "translate", str(talk), "--to", "pt", "--to", "es", "--subtitles",
                             "--out", str(tmp_path / "out"))  # fmt: skip

    assert status == 0, err
    assert fake.body("POST", "/v1/quotes:compute") == {
        "usage": {"kind": "JOB_KIND_SUBTITLES", "duration": "84.500s", "targetLanguageCount": 2}
    }
    paths = [r.url.path for r in fake.requests]
    assert paths.index("/v1/quotes:compute") < paths.index("/v1/jobs"), "quoted first"
    assert "This job costs 22 credits; you have 8." in err.splitlines()
    assert "jobs/j1: subtitles job queued, 22 credits held" in err


def test_not_enough_credits_says_what_it_costs_and_how_to_buy(octavia, signed_in, talk):
    refusal = _status(9, "this needs 22 credits and 8 are available", "INSUFFICIENT_CREDITS", "billing.octavia")
    fake = _translate_api((400, refusal))

    status, _, err = octavia(fake, "translate", str(talk), "--to", "pt", "--subtitles")

    assert status == 1
    assert "error: this needs 22 credits and 8 are available [INSUFFICIENT_CREDITS]" in err
    assert "The job costs 22 credits and you have 8: buy a credit pack" in err, "the quote's figures"
    assert "`octavia prices`" in err and "`octavia buy <pack>`" in err


def test_the_refusals_own_figures_win_over_the_older_quote(octavia, signed_in, talk):
    refusal = _status(9, "this needs 22 credits and 3 are available", "INSUFFICIENT_CREDITS", "billing.octavia")
    refusal["details"][0]["metadata"] = {"needed": "22", "available": "3"}  # another job held 5 since the quote
    fake = _translate_api((400, refusal))

    _, _, err = octavia(fake, "translate", str(talk), "--to", "pt", "--subtitles")

    assert "The job costs 22 credits and you have 3: buy a credit pack" in err


def test_an_unverified_email_is_pointed_at_verify_email(octavia, signed_in, talk):
    refusal = _status(9, "confirm your email address first", "EMAIL_NOT_VERIFIED", "jobs.octavia")
    fake = _translate_api((400, refusal))

    status, _, err = octavia(fake, "translate", str(talk), "--transcript")

    assert status == 1
    assert fake.body("POST", "/v1/quotes:compute")["usage"] == {
        "kind": "JOB_KIND_TRANSCRIPTION", "duration": "84.500s", "targetLanguageCount": 0,
    }  # fmt: skip
    assert "`octavia verify-email LINK`" in err and "`octavia resend-verification`" in err


def test_rate_limited_says_when_to_try_again_from_retry_after(octavia, signed_in, talk):
    refusal = _status(8, "too many jobs; slow down", "RATE_LIMITED", "jobs.octavia")
    fake = _translate_api((429, refusal, {"retry-after": "17"}))

    status, _, err = octavia(fake, "translate", str(talk), "--to", "pt", "--subtitles")

    assert status == 1
    assert "Too many requests for now: try again in 17 s (at " in err


def test_the_retry_delay_comes_from_retry_info_when_there_is_no_header():
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "180.200s"}
    response = httpx.Response(429, json=_status(8, "slow down", "RATE_LIMITED", "auth.octavia", retry))
    error = ApiError.from_response(response)
    assert error.retry_after_s == pytest.approx(180.2)
    assert "try again in 4 min (at " in error_hint(error)
    assert "in a little while" in error_hint(ApiError("slow down", reason="RATE_LIMITED", http_status=429))
    assert error_hint(ApiError("bad", reason="INSUFFICIENT_CREDITS")) == "", "that hint needs the job's price"


# --------------------------------------------------------------------------- API keys


def test_a_new_api_key_secret_is_printed_once_with_a_warning(octavia, signed_in):
    key = {"name": "apiKeys/k1", "displayName": "ci", "prefix": "oct_3f9a", "createTime": "2025-03-01T10:00:00Z"}
    fake = FakeApi({("POST", "/v1/apiKeys"): {"apiKey": key, "secret": "oct_3f9a.s3cr3t"}})

    status, out, err = octavia(fake, "keys", "create", "ci")

    assert status == 0
    assert fake.body("POST", "/v1/apiKeys") == {"displayName": "ci"}
    assert out == "oct_3f9a.s3cr3t\n", "stdout is the secret alone: `KEY=$(octavia keys create ci)`"
    assert "apiKeys/k1 (ci) created" in err and "will not be shown again" in err


def test_api_keys_are_listed_and_revoked_by_name_or_id(octavia, signed_in):
    keys = [
        {"name": "apiKeys/k2", "displayName": "laptop", "prefix": "oct_77aa", "createTime": "2025-03-02T10:00:00Z"},
        {"name": "apiKeys/k1", "displayName": "ci", "prefix": "oct_3f9a", "createTime": "2025-03-01T10:00:00Z",
         "lastUseTime": "2025-03-03T09:00:00Z"},
    ]  # fmt: skip
    fake = FakeApi({
        ("GET", "/v1/apiKeys"): [{"apiKeys": keys[:1], "nextPageToken": "p2"}, {"apiKeys": keys[1:]}],
        ("DELETE", "/v1/apiKeys/k1"): {},
    })  # fmt: skip

    status, out, _ = octavia(fake, "keys", "list")
    assert status == 0
    header, laptop, ci = out.splitlines()
    assert header.split() == ["NAME", "LABEL", "PREFIX", "CREATED", "LAST", "USED"]
    assert laptop.split()[:3] == ["apiKeys/k2", "laptop", "oct_77aa"] and laptop.endswith("never")
    assert ci.split()[:3] == ["apiKeys/k1", "ci", "oct_3f9a"] and not ci.endswith("never")
    assert len(fake.sent("GET", "/v1/apiKeys")) == 2, "every page"

    assert octavia(fake, "keys", "revoke", "apiKeys/k1")[1] == "apiKeys/k1 revoked: it stops working at once\n"
    assert octavia(fake, "keys", "revoke", "k1")[0] == 0
    assert len(fake.sent("DELETE", "/v1/apiKeys/k1")) == 2
    assert octavia(fake, "keys", "revoke", "jobs/k1")[0] == 2


def test_with_octavia_api_key_every_call_sends_the_key_and_never_refreshes(octavia, store, monkeypatch):
    store.put(API, _session(expires_in=timedelta(seconds=-60)))  # an expired session that must not be touched
    monkeypatch.setenv("OCTAVIA_API_KEY", "oct_3f9a.s3cr3t")
    fake = FakeApi({("GET", "/v1/balance"): {"balance": {"availableCredits": "88", "heldCredits": "12"}}})

    status, out, _ = octavia(fake, "balance")

    assert status == 0
    assert out == "88 credits available, 12 held by running jobs\n"
    (request,) = fake.requests
    assert request.headers["x-api-key"] == "oct_3f9a.s3cr3t"
    assert "authorization" not in request.headers
    assert store.get(API).refreshToken == "refresh-1", "the stored session is left alone"


def test_a_refused_api_key_is_named_and_keeps_the_session(octavia, signed_in, monkeypatch):
    monkeypatch.setenv("OCTAVIA_API_KEY", "oct_dead.beef")
    fake = FakeApi({("GET", "/v1/balance"): (401, _status(16, "this API key was revoked", "API_KEY_REVOKED", "auth.octavia"))})

    status, _, err = octavia(fake, "balance")

    assert status == 1
    assert "the API key in OCTAVIA_API_KEY was refused" in err and "this API key was revoked" in err
    assert not fake.sent("POST", "/v1/auth/refresh")
    assert signed_in.get(API) is not None


@pytest.mark.parametrize("argv", [["login", "--email", "ada@example.com", "--password-stdin"], ["logout"],
                                  ["logout", "--everywhere"]])  # fmt: skip
def test_login_and_logout_say_an_api_key_is_in_use(octavia, signed_in, monkeypatch, argv):
    monkeypatch.setenv("OCTAVIA_API_KEY", "oct_3f9a.s3cr3t")
    fake = FakeApi({})

    status, _, err = octavia(fake, *argv, stdin="a password\n")

    assert status == 1
    assert "OCTAVIA_API_KEY is set, so every call uses that API key and no session" in err
    assert fake.requests == []
    assert signed_in.get(API) is not None


# --------------------------------------------------------------------------- email, password, sessions


@pytest.mark.parametrize(
    "given",
    ["https://octavia.example.com/verify-email?token=tok_ABC-123", "verify-email?token=tok_ABC-123&utm=mail", "tok_ABC-123"],
)
def test_verify_email_takes_the_link_or_the_token(octavia, given):
    fake = FakeApi({("POST", "/v1/auth/verify-email"): {"user": {"email": "ada@example.com", "emailVerified": True}}})

    status, out, _ = octavia(fake, "verify-email", given)

    assert status == 0
    assert fake.body("POST", "/v1/auth/verify-email") == {"token": "tok_ABC-123"}
    assert "authorization" not in fake.requests[0].headers, "the token is the credential: no login needed"
    assert out == "ada@example.com is verified\n"


def test_a_link_without_a_token_is_a_usage_error():
    with pytest.raises(UsageError, match="has no token"):
        verification_token("https://octavia.example.com/verify-email")
    assert verification_token("https://app.example.com/#/verify-email?token=a%2Db") == "a-b"


def test_resend_verification_asks_as_the_signed_in_user(octavia, signed_in):
    fake = FakeApi({("POST", "/v1/auth/verify-email:resend"): {}})

    status, out, _ = octavia(fake, "resend-verification")

    assert status == 0
    assert fake.body("POST", "/v1/auth/verify-email:resend") == {}
    assert fake.requests[0].headers["authorization"] == "Bearer access-1"
    assert "`octavia verify-email`" in out


def test_password_reads_the_current_and_new_password_from_two_lines_of_stdin(octavia, signed_in):
    fake = FakeApi({("POST", "/v1/auth/password"): {}})

    status, out, _ = octavia(fake, "password", "--password-stdin", stdin="old horse 9\nnew battery 7\n")

    assert status == 0
    assert fake.body("POST", "/v1/auth/password") == {"currentPassword": "old horse 9", "newPassword": "new battery 7"}
    assert out == "password changed; your other sessions have ended\n"


def test_password_without_the_second_line_is_a_usage_error(octavia, signed_in):
    fake = FakeApi({})

    status, _, err = octavia(fake, "password", "--password-stdin", stdin="old horse 9\n")

    assert status == 2
    assert "--password-stdin: no new password on the second line of stdin" in err
    assert fake.requests == []


def test_logout_everywhere_ends_every_session_and_forgets_this_one(octavia, signed_in):
    fake = FakeApi({("POST", "/v1/auth/logout-everywhere"): {"revokedSessions": 3}})

    status, out, _ = octavia(fake, "logout", "--everywhere")

    assert status == 0
    assert fake.requests[0].headers["authorization"] == "Bearer access-1"
    assert out == "logged out everywhere: 3 sessions ended, this one included\n"
    assert signed_in.get(API) is None


def test_a_failed_logout_everywhere_keeps_the_session_to_try_again(octavia, signed_in):
    fake = FakeApi({("POST", "/v1/auth/logout-everywhere"): (503, {"code": 14, "message": "auth is unavailable"})})

    assert octavia(fake, "logout", "--everywhere")[0] == 1
    assert signed_in.get(API) is not None


# --------------------------------------------------------------------------- operators


def test_admin_grant_is_signed_with_a_service_token_not_a_session(octavia, signed_in, monkeypatch):
    monkeypatch.setenv("OCTAVIA_SERVICE_SECRET", SECRET)
    reply = {"transaction": {"name": "transactions/t9", "reason": "TRANSACTION_REASON_GRANT", "availableChange": "500"},
             "balance": {"user": "users/u1", "availableCredits": "588", "heldCredits": "0"}}  # fmt: skip
    fake = FakeApi({("POST", "/v1/admin/credits"): reply})

    status, out, _ = octavia(fake, "admin", "grant", "users/u1", "500", "--reason", "goodwill", "--reference", "TICKET-7")

    assert status == 0
    (request,) = fake.requests
    assert "authorization" not in request.headers
    assert ServiceCredentials("billing", SECRET).verify(request.headers["x-service-token"]).service == "operator"
    body = json.loads(request.content)
    assert body.pop("requestId")
    assert body == {"user": "users/u1", "credits": 500, "description": "goodwill", "reference": "TICKET-7"}
    assert out == "granted 500 credits to users/u1 (transactions/t9): 588 credits available, 0 held by running jobs\n"


def test_admin_grant_takes_credits_back_with_a_negative_number(octavia, monkeypatch):
    monkeypatch.setenv("OCTAVIA_SERVICE_SECRET", SECRET)
    reply = {"transaction": {"name": "transactions/t10"}, "balance": {"availableCredits": "88"}}
    fake = FakeApi({("POST", "/v1/admin/credits"): reply})

    status, out, _ = octavia(fake, "admin", "grant", "u1", "-500", "--reason", "refunded by the bank")

    assert status == 0
    assert fake.body("POST", "/v1/admin/credits")["credits"] == -500
    assert out.startswith("took 500 credits back from users/u1 (transactions/t10)")


def test_admin_grant_without_the_service_secret_is_a_usage_error(octavia):
    fake = FakeApi({})

    status, _, err = octavia(fake, "admin", "grant", "users/u1", "500", "--reason", "goodwill")

    assert status == 2
    assert "octavia admin grant: OCTAVIA_SERVICE_SECRET is not set" in err
    assert fake.requests == []


def test_a_grant_of_nothing_is_refused_by_the_arguments():
    with pytest.raises(SystemExit) as exit:
        cli_main.main(["admin", "grant", "users/u1", "0", "--reason", "nothing"])
    assert exit.value.code == 2


def test_names_are_given_with_or_without_their_collection():
    assert resource_name("k1", "apiKeys") == resource_name("apiKeys/k1", "apiKeys") == "apiKeys/k1"
    assert resource_name("/checkouts/c1/", "checkouts") == "checkouts/c1"
    with pytest.raises(UsageError, match="checkouts/<id> or <id>"):
        resource_name("jobs/c1", "checkouts")


def test_voices_lists_what_a_dub_can_use_with_the_default_marked(octavia, signed_in):
    fake = FakeApi({("GET", "/v1/voices"): {"voices": [
        {"name": "voices/kokoro-pt-br-alpha", "language": "pt-BR", "engine": "ENGINE_KOKORO", "supportsSpeakingRate": True,
         "isDefault": True, "qualityNote": "natural"},
        {"name": "voices/espeak-pt-pt", "language": "pt-PT", "engine": "ENGINE_ESPEAK", "qualityNote": "robotic"},
    ]}})  # fmt: skip

    status, out, _ = octavia(fake, "voices", "--language", "pt")

    assert status == 0
    (request,) = fake.sent("GET", "/v1/voices")
    assert dict(request.url.params) == {"pageSize": "1000", "language": "pt"}
    lines = out.splitlines()
    assert lines[0].split() == ["VOICE", "LANGUAGE", "ENGINE", "RATE", "CONTROL", "DEFAULT", "NOTE"]
    assert lines[1].split() == ["kokoro-pt-br-alpha", "pt-BR", "kokoro", "yes", "yes", "natural"]
    assert lines[2].split() == ["espeak-pt-pt", "pt-PT", "espeak", "no", "robotic"]
