"""What each `octavia` command does, over the API client.

Results go to stdout (paths, tables, JSON); prompts, progress and errors to
stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import sys
import time
import uuid
import webbrowser
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from .cli import (
    UsageError,
    check_media_file,
    content_type,
    default_out_dir,
    job_name,
    job_request,
    resource_name,
    safe_filename,
    verification_token,
)
from .client import ApiError, Client, CliError, ConnectionFailed, NotLoggedIn, format_error
from .credentials import API_KEY_ENV, parse_duration, parse_time
from .progress import JobProgress, TransferProgress, enum_label, human_bytes, state_is_final

WATCH_RETRIES = 5  # reconnections (or checkout polls) in a row that fail before giving up
SECOND_CTRL_C_S = 3.0  # without a terminal to ask on: a second Ctrl-C within this long cancels
BIG_FILE = 10_000_000  # downloads above this size get a progress bar
CHECKOUT_POLL_S = 2.0  # how often `octavia buy` asks whether the payment arrived
MAX_PAGE_SIZE = 100  # the API caps page_size here
SERVICE_SECRET_ENV = "OCTAVIA_SERVICE_SECRET"


class Detached(Exception):
    """The user stopped watching; the job goes on. Exit status 130."""


def _err(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- accounts


def _ask(prompt: str, flag: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"{flag} is required when stdin is not a terminal")
    value = input(prompt).strip()
    if not value:
        raise UsageError(f"{flag.lstrip('-')} is required")
    return value


def _password(args: argparse.Namespace, confirm: bool, what: str = "password", line: str = "first") -> str:
    """Asked for on the terminal (twice with `confirm`), or the next line of stdin with --password-stdin."""
    if args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsageError(f"--password-stdin: no {what} on the {line} line of stdin")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pass it on stdin with --password-stdin")
    password = getpass.getpass(f"{what.capitalize()}: ")
    if confirm and getpass.getpass(f"{what.capitalize()} again: ") != password:
        raise UsageError(f"the two {what}s differ")
    return password


def _without_api_key(client: Client, to: str) -> None:
    """Sessions do not apply while an API key is set: every call sends the key."""
    if client.api_key:
        raise CliError(f"{API_KEY_ENV} is set, so every call uses that API key and no session: unset it to {to}")


def _require_credential(client: Client) -> None:
    """Before asking for anything or sending a file, rather than after."""
    if not client.signed_in:
        raise NotLoggedIn(client.api)


def login(args: argparse.Namespace, client: Client) -> int:
    _without_api_key(client, "log in")
    email = args.email or _ask("Email: ", "--email")
    password = _password(args, confirm=False)
    reply = client.call("POST", "/v1/auth/login", {"email": email, "password": password}, auth=False)
    user = reply.get("user") or {}
    client.save_session(reply["tokens"], user.get("email") or email)
    print(f"logged in as {user.get('email') or email} at {client.api}")
    return 0


def signup(args: argparse.Namespace, client: Client) -> int:
    _without_api_key(client, "sign up and log in")
    email = args.email or _ask("Email: ", "--email")
    password = _password(args, confirm=True)
    body = {"email": email, "password": password}
    if args.display_name:
        body["displayName"] = args.display_name
    user = client.call("POST", "/v1/auth/signup", body, auth=False).get("user") or {}
    reply = client.call("POST", "/v1/auth/login", {"email": email, "password": password}, auth=False)
    client.save_session(reply["tokens"], user.get("email") or email)
    print(f"signed up and logged in as {user.get('email') or email} at {client.api}")
    return 0


def logout(args: argparse.Namespace, client: Client) -> int:
    _without_api_key(client, "log out (`octavia keys revoke NAME` ends a key)")
    if client.session is None:
        print(f"not logged in at {client.api}")
        return 0
    if args.everywhere:
        # Unlike a plain logout, a failure here must be seen: the other sessions would still be alive.
        ended = int(client.call("POST", "/v1/auth/logout-everywhere", {}).get("revokedSessions") or 0)
        client.forget_session()
        print(f"logged out everywhere: {ended} session{'' if ended == 1 else 's'} ended, this one included")
        return 0
    try:
        client.call("POST", "/v1/auth/logout", {})
    except (ApiError, NotLoggedIn):
        pass  # the session had already ended: forgetting it is all that is left
    client.forget_session()
    print(f"logged out of {client.api}")
    return 0


def whoami(args: argparse.Namespace, client: Client) -> int:
    user = client.call("GET", "/v1/auth/me").get("user") or {}
    verified = "" if user.get("emailVerified") else " (email not verified)"
    key = f" with the API key in {API_KEY_ENV}" if client.api_key else ""
    print(f"{user.get('email')}{verified}  {user.get('name')}  at {client.api}{key}")
    return 0


def change_password(args: argparse.Namespace, client: Client) -> int:
    _require_credential(client)
    current = _password(args, confirm=False, what="current password")
    new = _password(args, confirm=True, what="new password", line="second")
    client.call("POST", "/v1/auth/password", {"currentPassword": current, "newPassword": new})
    print("password changed; your other sessions have ended")
    return 0


def verify_email(args: argparse.Namespace, client: Client) -> int:
    token = verification_token(args.link)
    # The token is the credential: it works without being logged in, on any machine.
    user = client.call("POST", "/v1/auth/verify-email", {"token": token}, auth=False).get("user") or {}
    print(f"{user.get('email') or 'your email address'} is verified")
    return 0


def resend_verification(args: argparse.Namespace, client: Client) -> int:
    client.call("POST", "/v1/auth/verify-email:resend", {})
    print("a new verification email is on its way: open its link, or pass it to `octavia verify-email`")
    return 0


# --------------------------------------------------------------------------- API keys


def keys_create(args: argparse.Namespace, client: Client) -> int:
    reply = client.call("POST", "/v1/apiKeys", {"displayName": args.display_name})
    key = reply["apiKey"]
    _err(
        f"{key['name']} ({key.get('displayName', '')}) created. Its secret follows, and it will not be shown again: keep it now."
    )
    _err(f"octavia uses it when {API_KEY_ENV} is set to it; other clients send it as the x-api-key header.")
    print(reply["secret"], flush=True)
    return 0


def keys_list(args: argparse.Namespace, client: Client) -> int:
    found = _list(client, "/v1/apiKeys", "apiKeys")
    if args.json:
        print(json.dumps({"apiKeys": found}, indent=2))
    elif not found:
        _err("no API keys: `octavia keys create NAME` makes one")
    else:
        _table(
            ("NAME", "LABEL", "PREFIX", "CREATED", "LAST USED"),
            [(key.get("name", ""), key.get("displayName", ""), key.get("prefix", ""), _local(key.get("createTime", "")),
              _local(key.get("lastUseTime", "")) or "never") for key in found],
        )  # fmt: skip
    return 0


def keys_revoke(args: argparse.Namespace, client: Client) -> int:
    name = resource_name(args.name, "apiKeys")
    client.call("DELETE", f"/v1/{name}")
    print(f"{name} revoked: it stops working at once")
    return 0


# --------------------------------------------------------------------------- credits


def _balance_line(bal: Mapping) -> str:
    return f"{int(bal.get('availableCredits') or 0)} credits available, {int(bal.get('heldCredits') or 0)} held by running jobs"


def balance(args: argparse.Namespace, client: Client) -> int:
    print(_balance_line(client.call("GET", "/v1/balance").get("balance") or {}))
    return 0


def transactions(args: argparse.Namespace, client: Client) -> int:
    params = {"reason": f"TRANSACTION_REASON_{args.reason.upper()}"} if args.reason else {}
    found = _list(client, "/v1/transactions", "transactions", params, args.limit)
    if args.json:
        print(json.dumps({"transactions": found}, indent=2))
    elif not found:
        _err("no transactions")
    else:
        _table(
            ("TIME", "REASON", "AVAILABLE", "HELD", "REFERENCE", "DESCRIPTION"),
            [(_local(t.get("createTime", "")), enum_label(t.get("reason", ""), "TRANSACTION_REASON_"),
              _signed(t.get("availableChange")), _signed(t.get("heldChange")), t.get("reference", ""),
              t.get("description", "")) for t in found],
            numeric=(2, 3),
        )  # fmt: skip
    return 0


def _signed(credits: str | int | None) -> str:
    """An int64 change of credits (a JSON string) as `+12`, `-12` or `0`."""
    n = int(credits or 0)
    return f"{n:+d}" if n else "0"


# ISO 4217 currencies whose minor unit is not a hundredth of the major one.
_MINOR_UNIT_DIGITS = {
    **dict.fromkeys(("BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
                     "XAF", "XOF", "XPF"), 0),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}  # fmt: skip


def money(minor_units: str | int | None, currency: str) -> str:
    """An amount in the currency's minor unit: (999, "USD") -> `9.99 USD`, (500, "JPY") -> `500 JPY`."""
    digits = _MINOR_UNIT_DIGITS.get(currency.upper(), 2)
    return f"{Decimal(int(minor_units or 0)).scaleb(-digits):.{digits}f} {currency}"


def prices(args: argparse.Namespace, client: Client) -> int:
    # Both lists are public (pricing pages): no need to be logged in.
    price_list = client.call("GET", "/v1/prices", auth=False).get("prices") or []
    packs = client.call("GET", "/v1/creditPacks", auth=False).get("creditPacks") or []
    print("Credits per minute of media:")
    _table(
        ("JOB KIND", "PER MINUTE", "+ PER TARGET LANGUAGE"),
        [(enum_label(p.get("kind", ""), "JOB_KIND_"), str(int(p.get("creditsPerMinute") or 0)),
          str(int(p.get("creditsPerMinutePerTargetLanguage") or 0))) for p in price_list],
        numeric=(1, 2),
    )  # fmt: skip
    print("A job costs (per minute + per target language x languages) x its minutes, rounded up to whole credits.")
    print("\nCredit packs (`octavia buy PACK`):")
    _table(
        ("PACK", "NAME", "CREDITS", "PRICE"),
        [(pack.get("name", "").removeprefix("creditPacks/"), pack.get("displayName", ""), str(int(pack.get("credits") or 0)),
          money(pack.get("priceMinorUnits"), pack.get("currencyCode", ""))) for pack in packs],
        numeric=(2, 3),
    )  # fmt: skip
    return 0


def voices(args: argparse.Namespace, client: Client) -> int:
    """The voices dubbing can use: `--voice LANG=VOICE` picks one; without it a job gets the language's default."""
    params = {"pageSize": "1000"}
    if args.language:
        params["language"] = args.language
    found = client.call("GET", "/v1/voices", params=params).get("voices") or []
    _table(
        ("VOICE", "LANGUAGE", "ENGINE", "RATE CONTROL", "DEFAULT", "NOTE"),
        [(v.get("name", "").removeprefix("voices/"), v.get("language", ""), enum_label(v.get("engine", ""), "ENGINE_"),
          "yes" if v.get("supportsSpeakingRate") else "no", "yes" if v.get("isDefault") else "",
          v.get("qualityNote", "")) for v in found],
    )  # fmt: skip
    return 0


def buy(args: argparse.Namespace, client: Client) -> int:
    body = {
        "creditPack": resource_name(args.pack, "creditPacks"),
        # The API's own public URL is always an allowed redirect: the payment page comes back to it.
        "successUrl": args.success_url or f"{client.api}/",
        "requestId": uuid.uuid4().hex,
    }
    try:
        checkout = client.call("POST", "/v1/checkouts", body)["checkout"]
    except ApiError as exc:
        if exc.reason == "REDIRECT_NOT_ALLOWED":
            exc.hint = "Give --success-url a page on an origin the API trusts: its public URL, or its web app's."
        raise
    _err(f"{checkout['name']}: {_bought(checkout)}. Pay on this page{_until(checkout)}:")
    print(checkout["url"], flush=True)
    if args.open:
        webbrowser.open(checkout["url"])
    return _await_payment(client, checkout)


def _bought(checkout: Mapping) -> str:
    return f"{int(checkout.get('credits') or 0)} credits for {money(checkout.get('priceMinorUnits'), checkout.get('currencyCode', ''))}"


def _until(checkout: Mapping) -> str:
    expires = _local(checkout.get("expireTime", ""))
    return f" (until {expires})" if expires else ""


def _await_payment(client: Client, checkout: dict) -> int:
    """Poll the checkout until it is paid or expires; Ctrl-C stops waiting, not the checkout."""
    name = checkout["name"]
    later = f"`octavia checkout {name}` shows whether it was paid"
    _err("waiting for the payment (Ctrl-C stops waiting; you can still pay)")
    failures = 0
    try:
        while checkout.get("state") == "CHECKOUT_STATE_OPEN":
            time.sleep(CHECKOUT_POLL_S)
            try:
                checkout = client.call("GET", f"/v1/{name}")["checkout"]
                failures = 0
            except (ApiError, ConnectionFailed) as exc:
                failures += 1
                if not _transient(exc) or failures > WATCH_RETRIES:
                    raise CliError(f"{exc}\n{later}") from None
    except KeyboardInterrupt:
        _err(f"\nstopped waiting; {name} can still be paid{_until(checkout)}. {later}")
        raise Detached() from None
    state = checkout.get("state", "")
    if state == "CHECKOUT_STATE_COMPLETED":
        print(f"paid: {int(checkout.get('credits') or 0)} credits added")
        print(_balance_line(client.call("GET", "/v1/balance").get("balance") or {}))
        return 0
    if state == "CHECKOUT_STATE_EXPIRED":
        _err(f"{name} expired before it was paid; nothing was charged")
    else:
        _err(f"{name} is {enum_label(state, 'CHECKOUT_STATE_')}")
    return 1


def describe_checkout(checkout: Mapping) -> list[str]:
    """A checkout as lines of text, for `octavia checkout`."""
    state = checkout.get("state", "")
    lines = [
        f"{checkout.get('name')}  {enum_label(state, 'CHECKOUT_STATE_')}",
        f"  pack       {checkout.get('creditPack', '')}: {_bought(checkout)}",
        f"  created    {_local(checkout.get('createTime', ''))}",
    ]
    if checkout.get("completeTime"):
        lines.append(f"  paid       {_local(checkout['completeTime'])}")
    if state == "CHECKOUT_STATE_OPEN":
        lines.append(f"  pay at     {checkout.get('url', '')}{_until(checkout)}")
    return lines


def show_checkout(args: argparse.Namespace, client: Client) -> int:
    found = client.call("GET", f"/v1/{resource_name(args.name, 'checkouts')}")["checkout"]
    print(json.dumps(found, indent=2) if args.json else "\n".join(describe_checkout(found)))
    return 0


def admin_grant(args: argparse.Namespace, client: Client) -> int:
    secret = os.environ.get(SERVICE_SECRET_ENV, "").strip()
    if not secret:
        raise UsageError(
            f"{SERVICE_SECRET_ENV} is not set: operator commands sign their calls with the secret the services share"
        )
    # Imported here: it brings grpc and the generated API, which only operators need.
    from octavia_runtime.auth import SERVICE_TOKEN_HEADER, ServiceCredentials

    user = resource_name(args.user, "users")
    body = {"user": user, "credits": args.credits, "description": args.reason, "requestId": uuid.uuid4().hex}
    if args.reference:
        body["reference"] = args.reference
    token = ServiceCredentials("operator", secret).token()
    reply = client.call("POST", "/v1/admin/credits", body, auth=False, headers={SERVICE_TOKEN_HEADER: token})
    done = f"granted {args.credits} credits to" if args.credits > 0 else f"took {-args.credits} credits back from"
    print(f"{done} {user} ({(reply.get('transaction') or {}).get('name', '')}): {_balance_line(reply.get('balance') or {})}")
    return 0


# --------------------------------------------------------------------------- translate


def translate(args: argparse.Namespace, client: Client) -> int:
    job_spec = job_request(args)  # every usage error before a byte is sent
    path: Path = args.file
    size = check_media_file(path)
    media_type = content_type(path, args.content_type)
    out_dir = args.out or default_out_dir(path.name)
    _require_credential(client)

    upload = client.call(
        "POST",
        "/v1/uploads",
        {"filename": path.name, "contentType": media_type, "sizeBytes": size, "requestId": uuid.uuid4().hex},
    )["upload"]
    bar = TransferProgress(f"uploading {path.name}", size)
    client.put_file(upload["uploadUrl"], upload.get("uploadHeaders") or {}, path, bar)
    bar.finish()
    asset = client.call("POST", f"/v1/{upload['name']}:complete", {})["asset"]
    _err(f"{asset['name']}: {describe_media(asset)}")

    quote = client.call("POST", "/v1/quotes:compute", {"usage": usage(job_spec, asset)})["quote"]
    cost, available = int(quote.get("credits") or 0), int(quote.get("availableCredits") or 0)
    _err(f"This job costs {cost} credits; you have {available}.")
    try:
        job = client.call("POST", "/v1/jobs", {"job": {**job_spec, "inputAsset": asset["name"]}, "requestId": uuid.uuid4().hex})[
            "job"
        ]
    except ApiError as exc:
        if exc.reason == "INSUFFICIENT_CREDITS":
            # Billing's refusal says what it saw when it refused; the quote is a moment older.
            needed, have = exc.metadata.get("needed") or cost, exc.metadata.get("available") or available
            exc.hint = (
                f"The job costs {needed} credits and you have {have}: buy a credit pack "
                "(`octavia prices` lists them, `octavia buy <pack>` buys one), then run this again."
            )
        raise
    held = int(job.get("creditsHeld") or 0)
    _err(f"{job['name']}: {enum_label(job.get('kind', ''), 'JOB_KIND_')} job queued" + (f", {held} credits held" if held else ""))
    final = follow(client, job["name"])
    return conclude(client, job["name"], final, out_dir)


def usage(job_spec: Mapping, asset: Mapping) -> dict:
    """What GetQuote prices: the job's kind and languages, and the uploaded media's probed duration."""
    found: dict = {"kind": job_spec["kind"], "targetLanguageCount": len(job_spec.get("targetLanguages") or ())}
    duration = (asset.get("mediaInfo") or {}).get("duration")
    if duration:
        found["duration"] = duration
    return found


def describe_media(asset: dict) -> str:
    info = asset.get("mediaInfo") or {}
    streams = ", ".join(
        f"{enum_label(s.get('type', ''), 'STREAM_TYPE_')} {s.get('codec', '')}".strip() for s in info.get("streams") or ()
    )
    duration = parse_duration(info.get("duration"))
    text = f"{human_bytes(int(asset.get('sizeBytes') or 0))}"
    if duration is not None:
        text += f", {duration:.1f} s"
    return text + (f" ({streams})" if streams else "")


# --------------------------------------------------------------------------- watching


def follow(client: Client, name: str, view: JobProgress | None = None) -> dict:
    """Show the job's events until the final one, and return it. Ctrl-C asks
    whether to cancel the job (a second Ctrl-C cancels it)."""
    view = view or JobProgress()
    cancelling = False
    while True:
        try:
            return _until_final(client, name, view)
        except KeyboardInterrupt:
            view.interrupt()
            if cancelling:
                _err(f"stopped watching; {name} is being cancelled")
                raise Detached() from None
            choice = _cancel_choice(name)
            if choice == "detach":
                _err(
                    f"stopped watching; {name} goes on. `octavia watch {name}` follows it again, `octavia cancel {name}` stops it"
                )
                raise Detached() from None
            if choice == "cancel":
                cancelling = _cancel(client, name)


def _cancel_choice(name: str) -> str:
    """'cancel', 'detach' or 'continue'."""
    if sys.stdin.isatty():
        try:
            answer = input(f"Cancel {name}? [y]es / [d]etach, it goes on / Enter: keep watching (Ctrl-C again: cancel) ")
        except KeyboardInterrupt:
            _err("")
            return "cancel"
        except EOFError:
            return "detach"
        answer = answer.strip().lower()
        return "cancel" if answer in ("y", "yes") else "detach" if answer in ("d", "detach") else "continue"
    _err(f"Ctrl-C again within {SECOND_CTRL_C_S:.0f} s cancels {name}; otherwise watching goes on")
    try:
        time.sleep(SECOND_CTRL_C_S)
    except KeyboardInterrupt:
        return "cancel"
    return "continue"


def _cancel(client: Client, name: str) -> bool:
    try:
        job = client.call("POST", f"/v1/{name}:cancel", {})["job"]
    except ApiError as exc:
        _err(f"could not cancel {name}: {format_error(exc)}")
        return False
    _err(f"{name}: {enum_label(job.get('state', ''), 'STATE_')}")
    return True


def _transient(exc: Exception) -> bool:
    return isinstance(exc, ConnectionFailed) or (isinstance(exc, ApiError) and exc.http_status in (502, 503, 504))


def _until_final(client: Client, name: str, view: JobProgress) -> dict:
    failures, last_sequence = 0, 0
    while True:
        try:
            for event in client.watch(name):
                failures = 0
                sequence = int(event.get("sequence") or 0)
                kind = event.get("type")
                replayed = sequence and sequence <= last_sequence and kind != "JOB_EVENT_TYPE_SNAPSHOT"
                if replayed and kind != "JOB_EVENT_TYPE_HEARTBEAT" and not event.get("final"):
                    continue  # seen before a reconnection
                last_sequence = max(last_sequence, sequence)
                view.update(event)
                if event.get("final"):
                    view.finish()
                    return event
            why = "the stream ended before the job did"
        except (ApiError, ConnectionFailed) as exc:
            if not _transient(exc):
                raise
            why = str(exc)
        failures += 1
        if failures > WATCH_RETRIES:
            raise CliError(f"lost the stream of {name}: {why}. `octavia watch {name}` follows it again")
        view.interrupt()
        _err(f"reconnecting to {name} ({why})")
        time.sleep(min(2**failures, 10))


def final_state(event: dict) -> tuple[str, dict | None]:
    job = event.get("job") or {}
    return event.get("state") or job.get("state") or "", event.get("error") or job.get("error")


def report_end(name: str, event: dict) -> int:
    """Say how a job ended; the exit status: 0 if it succeeded."""
    state, error = final_state(event)
    if state == "STATE_SUCCEEDED":
        return 0
    if state == "STATE_FAILED":
        why = format_error(ApiError.from_status(error)) if error else "no reason given"
        _err(f"{name} failed: {why}")
    elif state == "STATE_CANCELLED":
        _err(f"{name} was cancelled")
    else:
        why = format_error(ApiError.from_status(error)) if error else "the stream ended"
        _err(f"stopped watching {name}: {why}")
    return 1


def conclude(client: Client, name: str, final: dict, out_dir: Path) -> int:
    status = report_end(name, final)
    if status:
        return status
    job = client.call("GET", f"/v1/{name}")["job"]
    _err(f"{name} succeeded{_took(job)}{_charged(job)}")
    _download_all(client, job, out_dir)
    return 0


def _took(job: dict) -> str:
    start, end = parse_time(job.get("createTime", "")), parse_time(job.get("endTime", ""))
    return f" in {(end - start).total_seconds():.0f} s" if start and end else ""


def _charged(job: dict) -> str:
    charged = int(job.get("creditsCharged") or 0)
    return f", {charged} credits charged" if charged else ""


# --------------------------------------------------------------------------- downloads


def _download_all(client: Client, job: dict, out_dir: Path) -> list[Path]:
    artifacts = job.get("artifacts") or []
    if not artifacts:
        _err(f"{job['name']} made no files")
        return []
    paths: list[Path] = []
    taken: set[str] = set()
    for artifact in artifacts:
        name = _unique(safe_filename(artifact.get("filename") or "", artifact["asset"].rsplit("/", 1)[-1]), taken)
        url = client.call("POST", f"/v1/{artifact['asset']}:createDownloadUrl", {})["url"]
        size = int(artifact.get("sizeBytes") or 0)
        bar = TransferProgress(f"downloading {name}", size) if size > BIG_FILE else None
        path = client.download(url, out_dir / name, bar)
        if bar:
            bar.finish()
        paths.append(path)
        label = enum_label(artifact.get("kind", ""), "ARTIFACT_KIND_")
        print(f"{label:<18} {artifact.get('language') or '-':<6} {_shown(path)}")
    return paths


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        stem, dot, suffix = name.partition(".")
        candidate = f"{stem}-{n}{dot}{suffix}"
    taken.add(candidate)
    return candidate


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- jobs


def jobs(args: argparse.Namespace, client: Client) -> int:
    params = {}
    if args.state:
        params["state"] = f"STATE_{args.state.upper()}"
    if args.kind:
        params["kind"] = f"JOB_KIND_{args.kind.upper().replace('-', '_')}"
    found = _list(client, "/v1/jobs", "jobs", params, args.limit)
    if args.json:
        print(json.dumps({"jobs": found}, indent=2))
    elif not found:
        _err("no jobs")
    else:
        _table(
            ("NAME", "KIND", "STATE", "DONE", "CREATED", "INPUT"),
            [(job.get("name", ""), enum_label(job.get("kind", ""), "JOB_KIND_"), enum_label(job.get("state", ""), "STATE_"),
              f"{int((job.get('progress') or {}).get('percent') or 0)}%", _local(job.get("createTime", "")),
              job.get("displayName", "")) for job in found],
        )  # fmt: skip
    return 0


def describe_job(job: dict) -> list[str]:
    """A job as lines of text, for `octavia job`."""
    progress = job.get("progress") or {}
    source = job.get("sourceLanguage") or job.get("detectedLanguage") or "detect"
    targets = ", ".join(job.get("targetLanguages") or ())
    lines = [
        f"{job.get('name')}  {enum_label(job.get('kind', ''), 'JOB_KIND_')}  {enum_label(job.get('state', ''), 'STATE_')}",
        f"  input      {job.get('inputAsset', '')}  {job.get('displayName', '')}",
        f"  languages  {source}" + (f" -> {targets}" if targets else ""),
        f"  progress   {int(progress.get('percent') or 0)}%  {enum_label(progress.get('stage', ''), 'STAGE_')}"
        + (f": {progress['message']}" if progress.get("message") else ""),
        f"  created    {_local(job.get('createTime', ''))}" + (f"  ended {_local(job['endTime'])}" if job.get("endTime") else ""),
        f"  credits    {int(job.get('creditsHeld') or 0)} held, {int(job.get('creditsCharged') or 0)} charged",
    ]
    if job.get("error"):
        lines.append(f"  error      {format_error(ApiError.from_status(job['error']))}")
    if job.get("stages"):
        lines.append("  stages")
        for stage in job["stages"]:
            label = enum_label(stage.get("stage", ""), "STAGE_") + (f" ({stage['language']})" if stage.get("language") else "")
            state = enum_label(stage.get("state", ""), "STAGE_STATE_")
            total = int(stage.get("totalSegments") or 0)
            segments = f"  {int(stage.get('completedSegments') or 0)}/{total} segments" if total else ""
            lines.append(f"    {label:<28} {state}{segments}")
    if job.get("artifacts"):
        lines.append("  artifacts")
        for artifact in job["artifacts"]:
            lines.append(
                f"    {enum_label(artifact.get('kind', ''), 'ARTIFACT_KIND_'):<18} {artifact.get('language') or '-':<6} "
                f"{artifact.get('filename', '')}  {human_bytes(int(artifact.get('sizeBytes') or 0))}  {artifact.get('asset', '')}"
            )
    return lines


def job(args: argparse.Namespace, client: Client) -> int:
    found = client.call("GET", f"/v1/{job_name(args.name)}")["job"]
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        print("\n".join(describe_job(found)))
    return 0


def watch(args: argparse.Namespace, client: Client) -> int:
    name = job_name(args.name)
    status = report_end(name, follow(client, name))
    if status == 0:
        _err(f"{name} succeeded: `octavia download {name}` fetches its files")
    return status


def cancel(args: argparse.Namespace, client: Client) -> int:
    name = job_name(args.name)
    found = client.call("POST", f"/v1/{name}:cancel", {})["job"]
    print(f"{name}: {enum_label(found.get('state', ''), 'STATE_')}")
    return 0


def download(args: argparse.Namespace, client: Client) -> int:
    name = job_name(args.name)
    found = client.call("GET", f"/v1/{name}")["job"]
    state = found.get("state", "")
    if not found.get("artifacts"):
        yet = "" if state_is_final(state) else " yet"
        raise CliError(f"{name} is {enum_label(state, 'STATE_')} and has no files to download{yet}")
    if state != "STATE_SUCCEEDED":
        _err(f"{name} is {enum_label(state, 'STATE_')}: downloading the files it has made so far")
    out_dir = args.out or default_out_dir(found.get("displayName") or name.rsplit("/", 1)[-1])
    _download_all(client, found, out_dir)
    return 0


# --------------------------------------------------------------------------- shared


def _list(client: Client, path: str, key: str, params: Mapping[str, str] | None = None, limit: int | None = None) -> list[dict]:
    """The `key` items of a List call, newest first, page after page: `limit` of them, or all."""
    query: dict[str, str | int] = {**(params or {}), "page_size": min(limit or MAX_PAGE_SIZE, MAX_PAGE_SIZE)}
    found: list[dict] = []
    while limit is None or len(found) < limit:
        page = client.call("GET", path, params=query)
        found += page.get(key) or []
        if not page.get("nextPageToken"):
            break
        query["page_token"] = page["nextPageToken"]
    return found[:limit]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> None:
    """Columns as wide as their widest cell, numbers aligned right."""
    lines = [list(header), *(list(row) for row in rows)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        cells = (
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        print("  ".join(cells).rstrip())


def _local(timestamp: str) -> str:
    when = parse_time(timestamp)
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else ""


def error_hint(error: ApiError) -> str:
    """What the user can do about an error of the API, when the CLI knows; else ""."""
    if error.hint:
        return error.hint
    if error.reason == "EMAIL_NOT_VERIFIED":
        return (
            "`octavia verify-email LINK` confirms it with the link from the verification email; "
            "`octavia resend-verification` sends a new one."
        )
    if error.reason == "RATE_LIMITED" or error.http_status == 429:
        return f"Too many requests for now: try again {_retry_time(error.retry_after_s)}."
    return ""


def _retry_time(seconds: float | None) -> str:
    if seconds is None:
        return "in a little while"
    seconds = math.ceil(seconds)
    span = f"{seconds} s" if seconds < 120 else f"{math.ceil(seconds / 60)} min"
    return f"in {span} (at {(datetime.now() + timedelta(seconds=seconds)).strftime('%H:%M:%S')})"


COMMANDS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "login": login,
    "signup": signup,
    "logout": logout,
    "whoami": whoami,
    "password": change_password,
    "verify-email": verify_email,
    "resend-verification": resend_verification,
    "keys create": keys_create,
    "keys list": keys_list,
    "keys revoke": keys_revoke,
    "balance": balance,
    "transactions": transactions,
    "prices": prices,
    "voices": voices,
    "buy": buy,
    "checkout": show_checkout,
    "admin grant": admin_grant,
    "translate": translate,
    "jobs": jobs,
    "job": job,
    "watch": watch,
    "cancel": cancel,
    "download": download,
}
