"""The signed-in sessions, one per API URL, in a file only the user can read;
or an API key from the environment, which replaces the session altogether.

    $OCTAVIA_CONFIG_DIR/credentials.json   (default ~/.config/octavia/credentials.json)

    {"sessions": {"http://127.0.0.1:8080": {"email": ..., "accessToken": ..., "accessTokenExpireTime": ...,
                                             "refreshToken": ..., "refreshTokenExpireTime": ...}}}

The file is written whole to a temporary file (mode 0600) and renamed over the
old one, so a crash never leaves half a token. Refresh tokens are single-use
and presenting one twice ends the session, so two `octavia` processes must not
both refresh: refreshing happens under an exclusive lock on a file beside it,
and the second process re-reads the tokens the first one saved.

With OCTAVIA_API_KEY set, every call sends that key (`x-api-key`) instead: a
key does not expire, so there is nothing to refresh and nothing to store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

FILENAME = "credentials.json"
API_KEY_ENV = "OCTAVIA_API_KEY"
# Refresh this long before the access token's stated expiry: the clocks of the
# client and the server differ, and a request takes time to arrive.
EXPIRY_MARGIN = timedelta(seconds=30)


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    explicit = environ.get("OCTAVIA_CONFIG_DIR", "").strip()
    return Path(explicit).expanduser() if explicit else Path.home() / ".config" / "octavia"


def api_key(environ: Mapping[str, str] | None = None) -> str:
    """The API key to call with instead of a session ("" when none is set)."""
    environ = os.environ if environ is None else environ
    return environ.get(API_KEY_ENV, "").strip()


def parse_time(value: str) -> datetime | None:
    """A protobuf JSON Timestamp (`2025-01-02T03:04:05.123456789Z`) as an aware datetime."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_duration(value: str | None) -> float | None:
    """A protobuf JSON Duration (`12.500s`) in seconds."""
    if not value:
        return None
    try:
        return float(str(value).removesuffix("s"))
    except ValueError:
        return None


@dataclass(frozen=True)
class Session:
    """The tokens of one session, as SessionTokens gives them (JSON names)."""

    accessToken: str
    refreshToken: str
    accessTokenExpireTime: str = ""
    refreshTokenExpireTime: str = ""
    email: str = ""

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, str], email: str = "") -> Session:
        """From the `tokens` of a LogIn or RefreshToken response."""
        return cls(
            accessToken=tokens["accessToken"],
            refreshToken=tokens["refreshToken"],
            accessTokenExpireTime=tokens.get("accessTokenExpireTime", ""),
            refreshTokenExpireTime=tokens.get("refreshTokenExpireTime", ""),
            email=email,
        )

    def access_expired(self, now: datetime | None = None) -> bool:
        expires = parse_time(self.accessTokenExpireTime)
        if expires is None:
            return False  # unknown: let the server say so (401 TOKEN_EXPIRED)
        return (now or datetime.now(UTC)) >= expires - EXPIRY_MARGIN

    def refresh_expired(self, now: datetime | None = None) -> bool:
        expires = parse_time(self.refreshTokenExpireTime)
        return expires is not None and (now or datetime.now(UTC)) >= expires


class CredentialStore:
    """Reads and writes the credentials file."""

    def __init__(self, directory: Path | None = None):
        self.directory = directory or config_dir()
        self.path = self.directory / FILENAME

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"sessions": {}}
        except (OSError, ValueError):
            return {"sessions": {}}  # unreadable or corrupt: as if signed out; the next login rewrites it
        if not isinstance(data, dict) or not isinstance(data.get("sessions"), dict):
            return {"sessions": {}}
        return data

    def _write(self, data: dict) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".credentials-", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=2, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, api: str) -> Session | None:
        entry = self._read()["sessions"].get(api)
        if not isinstance(entry, dict):
            return None
        try:
            return Session(**{k: v for k, v in entry.items() if k in Session.__dataclass_fields__})
        except TypeError:
            return None

    def put(self, api: str, session: Session) -> None:
        data = self._read()
        data["sessions"][api] = asdict(session)
        self._write(data)

    def remove(self, api: str) -> bool:
        data = self._read()
        if data["sessions"].pop(api, None) is None:
            return False
        self._write(data)
        return True

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive among `octavia` processes sharing this directory (for refreshing)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.directory / "credentials.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
