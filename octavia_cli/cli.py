"""The command line: arguments, their checks, and what a job request is made of.

Nothing here talks to the network, so it is what the unit tests exercise.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse


class UsageError(Exception):
    """Arguments that cannot work; exit status 2, like argparse's own errors."""


STATES = ("queued", "running", "cancelling", "succeeded", "failed", "cancelled")
KINDS = ("transcription", "subtitles", "audio-translation", "video-dubbing")
FORMATS = ("srt", "vtt")
FIT_POLICIES = ("keep-timing", "extend-video")
DUCKING = ("none", "light", "medium", "strong", "replace")
REASONS = ("purchase", "grant", "hold", "capture", "release", "refund", "adjustment")
# Media types mimetypes may not know on every system; the API takes only audio/* and video/*.
EXTRA_TYPES = {
    ".m4a": "audio/mp4",
    ".aac": "audio/aac",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/opus",
    ".wav": "audio/wav",
    ".weba": "audio/webm",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".mov": "video/quicktime",
    ".m4v": "video/mp4",
    ".mp4": "video/mp4",
    ".ts": "video/mp2t",
    ".avi": "video/x-msvideo",
}
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})*$", re.IGNORECASE)
_TOKEN_PARAM = re.compile(r"[?&#]token=([^&#\s]+)")

DESCRIPTION = """\
Octavia from the command line: upload a video or audio file, make a transcript
or subtitles in other languages, watch the job live and download the files.
Jobs cost credits per minute of media; buy them in packs.

  octavia signup                                  create an account (then you are logged in)
  octavia verify-email LINK                       confirm your email with the link you were sent
  octavia prices                                  what jobs cost, and the credit packs on sale
  octavia buy starter                             buy a pack: pay on the page it shows
  octavia translate talk.mp4 --to pt --subtitles  subtitles in English and Portuguese
  octavia translate talk.mp4 --transcript         a transcript in the spoken language
  octavia translate talk.mp4 --to pt --dub        the video dubbed into Portuguese
  octavia translate talk.mp3 --to es --audio-only a Spanish audio track
  octavia transactions                            where your credits went

Scripts can use an API key instead of logging in: `octavia keys create ci`,
then set OCTAVIA_API_KEY to the secret it prints.
"""


def default_api_url(environ: Mapping[str, str] | None = None) -> str:
    """OCTAVIA_API_URL, else the local stack's Envoy (the port from octavia_runtime.config)."""
    environ = os.environ if environ is None else environ
    explicit = environ.get("OCTAVIA_API_URL", "").strip()
    if explicit:
        return explicit
    from octavia_runtime.config import ConfigError, load

    try:
        return f"http://127.0.0.1:{load(environ).envoy_port}"
    except ConfigError as exc:
        raise UsageError(f"{exc} (or set OCTAVIA_API_URL, or pass --api URL)") from None


def api_url(given: str | None, environ: Mapping[str, str] | None = None) -> str:
    url = (given or default_api_url(environ)).strip().rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise UsageError(f"the API URL {url!r} is not an http(s) URL with a host")
    return url


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _credits(text: str) -> int:
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must not be 0: a positive number grants credits, a negative one takes them back")
    return value


def build_parser() -> argparse.ArgumentParser:
    # --api is accepted before or after the command: `octavia --api URL jobs` and `octavia jobs --api URL`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api",
        metavar="URL",
        default=argparse.SUPPRESS,
        help="Octavia's API (default: $OCTAVIA_API_URL, else the local stack's Envoy, http://127.0.0.1:8080)",
    )
    parser = argparse.ArgumentParser(
        prog="octavia", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, within=sub) -> argparse.ArgumentParser:
        return within.add_parser(name, help=help, description=help, parents=[common])

    for name, help in (("login", "log in and keep the session"), ("signup", "create an account and log in")):
        p = command(name, help)
        p.add_argument("--email", help="the account's email (asked for when missing)")
        p.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
        if name == "signup":
            p.add_argument("--name", dest="display_name", help="the name to show (default: the email's local part)")
    p = command("logout", "end the session and forget its tokens")
    p.add_argument("--everywhere", action="store_true", help="end every session of your account, on every device")
    command("whoami", "show the signed-in user")
    p = command("password", "change your password; your other sessions end")
    p.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the current password from the first line of stdin and the new one from the second",
    )
    p = command("verify-email", "confirm your email address with the link from the verification email")
    p.add_argument("link", metavar="LINK_OR_TOKEN", help="the link from the email, or just its token")
    command("resend-verification", "send the verification email again")

    command("balance", "show the credit balance")
    p = command("transactions", "list the movements of your credits, newest first")
    p.add_argument("--reason", choices=REASONS, help="only movements of this kind")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    command("prices", "show what jobs cost and the credit packs on sale")
    p = command("voices", "list the voices dubbing can use")
    p.add_argument("--language", default="", metavar="LANG", help="only voices speaking this language (pt matches pt-BR)")
    p = command("buy", "buy a credit pack: pay on the payment page, then wait for the credits")
    p.add_argument("pack", metavar="PACK", help="a pack from `octavia prices`, for example starter")
    p.add_argument("--success-url", metavar="URL", help="where the payment page sends you after paying (default: the API URL)")
    p.add_argument("--open", action="store_true", help="open the payment page in your web browser")
    p = command("checkout", "show a purchase of a credit pack")
    p.add_argument("name", metavar="NAME", help="checkouts/<id> or <id>")
    p.add_argument("--json", action="store_true", help="print the API's JSON")

    keys = command("keys", "API keys, for scripts and servers: create, list, revoke")
    actions = keys.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
    p = command("create", "create an API key and show its secret (once)", actions)
    p.add_argument("display_name", metavar="NAME", help="a label to tell the key apart, for example ci")
    p = command("list", "list your API keys (never their secrets)", actions)
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    p = command("revoke", "revoke an API key; it stops working at once", actions)
    p.add_argument("name", metavar="NAME", help="apiKeys/<id> or <id>")

    admin = command("admin", "operator commands, signed with the services' shared secret ($OCTAVIA_SERVICE_SECRET)")
    actions = admin.add_subparsers(dest="subcommand", required=True, metavar="ACTION")
    p = command("grant", "grant credits to a user, or take them back with a negative number", actions)
    p.add_argument("user", metavar="USER", help="users/<id>")
    p.add_argument("credits", type=_credits, metavar="CREDITS", help="credits to add; negative takes them back")
    p.add_argument("--reason", required=True, metavar="TEXT", help="why, for the user's statement and the audit log")
    p.add_argument("--reference", default="", metavar="REF", help="your reference, for example a support ticket")

    p = command("translate", "upload a file, run a job on it, watch it and download what it made")
    p.add_argument("file", type=Path, metavar="FILE", help="a video or audio file")
    p.add_argument(
        "--to",
        dest="targets",
        action="append",
        default=[],
        metavar="LANG",
        help="a language to translate into, as a BCP-47 tag (pt, es, pt-BR); repeatable",
    )
    p.add_argument("--from", dest="source", default="", metavar="LANG", help="the spoken language (default: detect it)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--subtitles", action="store_true", help="subtitles in the spoken language and every --to language")
    what.add_argument("--transcript", action="store_true", help="a transcript and subtitles in the spoken language (no --to)")
    what.add_argument("--dub", action="store_true", help="the video dubbed into every --to language")
    what.add_argument("--audio-only", action="store_true", help="a translated audio track per --to language")
    p.add_argument(
        "--format",
        dest="formats",
        action="append",
        choices=FORMATS,
        default=[],
        help="subtitle format; repeatable (default: srt and vtt)",
    )
    dub = p.add_argument_group("dubbing (--dub, --audio-only)")
    dub.add_argument(
        "--voice",
        dest="voices",
        action="append",
        default=[],
        metavar="LANG=VOICE",
        help="the voice for a language, e.g. pt=voices/kokoro-pt-br-alpha (default: the language's; see `octavia voices`)",
    )
    dub.add_argument(
        "--fit",
        choices=FIT_POLICIES,
        default="keep-timing",
        help="speech still too long after speeding up: keep-timing lets it run into the next pause "
        "(default), extend-video holds the picture (--dub only)",
    )
    dub.add_argument(
        "--max-speed",
        type=float,
        default=0.0,
        metavar="X",
        help="the fastest the speech may be sped up to fit, 1.0 to 1.5 (default 1.3)",
    )
    dub.add_argument(
        "--background",
        choices=DUCKING,
        default="medium",
        help="how far the original sound is lowered under the new voice (default medium; replace drops it)",
    )
    dub.add_argument("--audio-format", choices=("m4a", "mp3"), default="m4a", help="the dubbed audio file's format")
    dub.add_argument("--keep-original-audio", action="store_true", help="--dub: keep the original sound as a second track")
    dub.add_argument("--soft-subtitles", action="store_true", help="--dub: add the translation as a subtitle track")
    dub.add_argument("--burn-in", action="store_true", help="--dub: draw the translation's subtitles into the picture")
    p.add_argument("--model", default="", help="the speech recognition model, for example base (default: the service's)")
    p.add_argument("--out", type=Path, help="where to put the files (default: ./<file name>.octavia/)")
    p.add_argument("--content-type", default="", help="the file's media type, when its name does not tell it")

    p = command("jobs", "list your jobs, newest first")
    p.add_argument("--state", choices=STATES, help="only jobs in this state")
    p.add_argument("--kind", choices=KINDS, help="only jobs of this kind")
    p.add_argument("--limit", type=_positive, default=20, help="at most this many (default 20)")
    p.add_argument("--json", action="store_true", help="print the API's JSON")

    p = command("job", "show a job")
    p.add_argument("name", metavar="NAME", help="jobs/<id> or <id>")
    p.add_argument("--json", action="store_true", help="print the API's JSON")

    p = command("watch", "follow a job's progress until it ends")
    p.add_argument("name", metavar="NAME", help="jobs/<id> or <id>")

    p = command("cancel", "ask a queued or running job to stop")
    p.add_argument("name", metavar="NAME", help="jobs/<id> or <id>")

    p = command("download", "download the files a job made")
    p.add_argument("name", metavar="NAME", help="jobs/<id> or <id>")
    p.add_argument("--out", type=Path, help="where to put the files (default: ./<input name>.octavia/)")
    return parser


def resource_name(name: str, collection: str) -> str:
    """`abc` or `<collection>/abc` -> `<collection>/abc`."""
    name = name.strip().strip("/")
    prefix = f"{collection}/"
    if not name or name.count("/") > 1 or (name.count("/") == 1 and not name.startswith(prefix)):
        raise UsageError(f"{name!r} is not a name in {collection}: give {collection}/<id> or <id>")
    return name if name.startswith(prefix) else prefix + name


def job_name(name: str) -> str:
    """`abc` or `jobs/abc` -> `jobs/abc`."""
    return resource_name(name, "jobs")


def verification_token(link: str) -> str:
    """The token of an email verification link (`https://…/verify-email?token=XYZ`), or the bare token."""
    link = link.strip()
    # Anywhere in the link: in the query, or after a `#` where a single-page app keeps its route.
    found = _TOKEN_PARAM.search(link)
    if found:
        return unquote(found.group(1))
    if not link or any(c in link for c in "/?=&#: "):
        raise UsageError(f"{link!r} has no token: give the whole link from the email (with ?token=...), or the token")
    return link


def language(tag: str) -> str:
    """A BCP-47 tag, tidied: `PT_br` -> `pt-BR`."""
    parts = tag.strip().replace("_", "-").split("-")
    tidy = "-".join([parts[0].lower(), *(p.upper() if len(p) == 2 else p for p in parts[1:])])
    if not _LANGUAGE.match(tidy):
        raise UsageError(f"{tag!r} is not a language tag such as en, pt or pt-BR")
    return tidy


def content_type(path: Path, given: str = "") -> str:
    """The file's media type: `given`, else guessed from its name; only audio/* and video/*."""
    guessed = given.strip() or EXTRA_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or ""
    if not guessed.startswith(("audio/", "video/")):
        what = f"is {guessed}" if guessed else "has a type its name does not tell"
        raise UsageError(f"{path.name} {what}; Octavia takes audio and video (say which with --content-type video/mp4)")
    return guessed


def job_request(args: argparse.Namespace) -> dict:
    """The `job` of CreateJob for `octavia translate`, without its input asset."""
    targets = list(dict.fromkeys(language(t) for t in args.targets))
    if args.dub or args.audio_only:
        return dubbing_request(args, targets)
    if args.transcript and targets:
        raise UsageError("--transcript is in the spoken language only: drop --to, or use --subtitles")
    if not args.transcript and not args.subtitles:
        hint = "--subtitles" if targets else "--transcript, or --to LANG --subtitles"
        raise UsageError(f"say what to make: {hint}")
    if args.subtitles and not targets:
        raise UsageError("--subtitles needs at least one --to LANG (for the spoken language only, use --transcript)")
    job: dict = {"kind": "JOB_KIND_TRANSCRIPTION" if args.transcript else "JOB_KIND_SUBTITLES"}
    if targets:
        job["targetLanguages"] = targets
    if args.source:
        job["sourceLanguage"] = language(args.source)
    if args.formats:
        job["subtitleOptions"] = {"formats": [f"SUBTITLE_FORMAT_{f.upper()}" for f in dict.fromkeys(args.formats)]}
    if args.model:
        job["transcriptionOptions"] = {"model": args.model}
    return job


def dubbing_request(args: argparse.Namespace, targets: list[str]) -> dict:
    """The `job` of CreateJob for `octavia translate --dub` or `--audio-only`."""
    flag = "--dub" if args.dub else "--audio-only"
    if not targets:
        raise UsageError(f"{flag} needs at least one --to LANG")
    if not args.dub and (args.fit == "extend-video" or args.keep_original_audio or args.soft_subtitles or args.burn_in):
        raise UsageError("--fit extend-video, --keep-original-audio, --soft-subtitles and --burn-in are for --dub (a video)")
    if args.max_speed and not 1.0 <= args.max_speed <= 1.5:
        raise UsageError("--max-speed is between 1.0 and 1.5")
    voices = {}
    for entry in args.voices:
        tag, _, voice = entry.partition("=")
        if not voice or language(tag) not in targets:
            raise UsageError(f"--voice {entry}: use LANG=VOICE with LANG one of the --to languages")
        voices[language(tag)] = voice if voice.startswith("voices/") else f"voices/{voice}"
    options: dict = {
        "fitPolicy": f"FIT_POLICY_{args.fit.upper().replace('-', '_')}",
        "duckingLevel": f"DUCKING_LEVEL_{args.background.upper()}",
        "audioFormat": f"AUDIO_FORMAT_{args.audio_format.upper()}",
    }
    if voices:
        options["voices"] = voices
    if args.max_speed:
        options["maxSpeedFactor"] = args.max_speed
    if args.keep_original_audio:
        options["keepOriginalAudio"] = True
    if args.soft_subtitles:
        options["softSubtitles"] = True
    job: dict = {
        "kind": "JOB_KIND_VIDEO_DUBBING" if args.dub else "JOB_KIND_AUDIO_TRANSLATION",
        "targetLanguages": targets,
        "dubbingOptions": options,
    }
    if args.source:
        job["sourceLanguage"] = language(args.source)
    if args.burn_in:
        job["subtitleOptions"] = {"burnIn": True}
    if args.formats:
        job.setdefault("subtitleOptions", {})["formats"] = [f"SUBTITLE_FORMAT_{f.upper()}" for f in dict.fromkeys(args.formats)]
    if args.model:
        job["transcriptionOptions"] = {"model": args.model}
    return job


def check_media_file(path: Path) -> int:
    """The file's size; a missing, special or empty file is a usage error."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if not path.is_file():
        raise UsageError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise UsageError(f"{path}: the file is empty")
    return size


def default_out_dir(filename: str, cwd: Path | None = None) -> Path:
    """`./talk.octavia/` for `talk.mp4`."""
    stem = Path(filename).stem or "octavia"
    return (cwd or Path.cwd()) / f"{stem}.octavia"


def safe_filename(name: str, fallback: str) -> str:
    """A server-suggested file name reduced to one harmless path component."""
    base = Path(name.replace("\\", "/")).name.strip().lstrip(".")
    return base or fallback
