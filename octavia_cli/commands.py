"""What each `octavia` command does, over the API client.

Results go to stdout (paths, tables, JSON); prompts, progress and errors to
stderr.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from .cli import (
    UsageError,
    check_media_file,
    content_type,
    default_out_dir,
    job_name,
    job_request,
    safe_filename,
)
from .client import ApiError, CliError, Client, ConnectionFailed, NotLoggedIn, format_error
from .credentials import parse_time
from .progress import JobProgress, TransferProgress, enum_label, human_bytes, state_is_final

WATCH_RETRIES = 5  # reconnections in a row without an event before giving up
SECOND_CTRL_C_S = 3.0  # without a terminal to ask on: a second Ctrl-C within this long cancels
BIG_FILE = 10_000_000  # downloads above this size get a progress bar


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


def _password(args: argparse.Namespace, confirm: bool) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        password = line.removesuffix("\n").removesuffix("\r")
        if not password:
            raise UsageError("--password-stdin: no password on the first line of stdin")
        return password
    if not sys.stdin.isatty():
        raise UsageError("no terminal to ask for the password: pass it on stdin with --password-stdin")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Password again: ") != password:
        raise UsageError("the two passwords differ")
    return password


def login(args: argparse.Namespace, client: Client) -> int:
    email = args.email or _ask("Email: ", "--email")
    password = _password(args, confirm=False)
    reply = client.call("POST", "/v1/auth/login", {"email": email, "password": password}, auth=False)
    user = reply.get("user") or {}
    client.save_session(reply["tokens"], user.get("email") or email)
    print(f"logged in as {user.get('email') or email} at {client.api}")
    return 0


def signup(args: argparse.Namespace, client: Client) -> int:
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
    if client.session is None:
        print(f"not logged in at {client.api}")
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
    print(f"{user.get('email')}{verified}  {user.get('name')}  at {client.api}")
    return 0


def balance(args: argparse.Namespace, client: Client) -> int:
    bal = client.call("GET", "/v1/balance").get("balance") or {}
    print(f"{int(bal.get('availableCredits') or 0)} credits available, {int(bal.get('heldCredits') or 0)} held by running jobs")
    return 0


# --------------------------------------------------------------------------- translate


def translate(args: argparse.Namespace, client: Client) -> int:
    job_spec = job_request(args)  # every usage error before a byte is sent
    path: Path = args.file
    size = check_media_file(path)
    media_type = content_type(path, args.content_type)
    out_dir = args.out or default_out_dir(path.name)
    if client.session is None:
        raise NotLoggedIn(client.api)

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

    job = client.call("POST", "/v1/jobs", {"job": {**job_spec, "inputAsset": asset["name"]}, "requestId": uuid.uuid4().hex})["job"]
    held = int(job.get("creditsHeld") or 0)
    _err(f"{job['name']}: {enum_label(job.get('kind', ''), 'JOB_KIND_')} job queued" + (f", {held} credits held" if held else ""))
    final = follow(client, job["name"])
    return conclude(client, job["name"], final, out_dir)


def describe_media(asset: dict) -> str:
    info = asset.get("mediaInfo") or {}
    streams = ", ".join(
        f"{enum_label(s.get('type', ''), 'STREAM_TYPE_')} {s.get('codec', '')}".strip() for s in info.get("streams") or ()
    )
    duration = _seconds(info.get("duration"))
    text = f"{human_bytes(int(asset.get('sizeBytes') or 0))}"
    if duration is not None:
        text += f", {duration:.1f} s"
    return text + (f" ({streams})" if streams else "")


def _seconds(duration: str | None) -> float | None:
    """A protobuf JSON Duration (`12.500s`) in seconds."""
    if not duration:
        return None
    try:
        return float(str(duration).removesuffix("s"))
    except ValueError:
        return None


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
                _err(f"stopped watching; {name} goes on. `octavia watch {name}` follows it again, `octavia cancel {name}` stops it")
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
    paths, taken = [], set()
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
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    params: dict[str, str | int] = {"page_size": min(args.limit, 100)}
    if args.state:
        params["state"] = f"STATE_{args.state.upper()}"
    if args.kind:
        params["kind"] = f"JOB_KIND_{args.kind.upper().replace('-', '_')}"
    found: list[dict] = []
    while len(found) < args.limit:
        page = client.call("GET", "/v1/jobs", params=params)
        found += page.get("jobs") or []
        if not page.get("nextPageToken"):
            break
        params["page_token"] = page["nextPageToken"]
    found = found[: args.limit]
    if args.json:
        print(json.dumps({"jobs": found}, indent=2))
        return 0
    if not found:
        _err("no jobs")
        return 0
    rows = [("NAME", "KIND", "STATE", "DONE", "CREATED", "INPUT")]
    for job in found:
        rows.append((
            job.get("name", ""),
            enum_label(job.get("kind", ""), "JOB_KIND_"),
            enum_label(job.get("state", ""), "STATE_"),
            f"{int((job.get('progress') or {}).get('percent') or 0)}%",
            _local(job.get("createTime", "")),
            job.get("displayName", ""),
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return 0


def _local(timestamp: str) -> str:
    when = parse_time(timestamp)
    return when.astimezone().strftime("%Y-%m-%d %H:%M") if when else ""


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


COMMANDS: dict[str, Callable[[argparse.Namespace, Client], int]] = {
    "login": login,
    "signup": signup,
    "logout": logout,
    "whoami": whoami,
    "balance": balance,
    "translate": translate,
    "jobs": jobs,
    "job": job,
    "watch": watch,
    "cancel": cancel,
    "download": download,
}
