"""The local stack's SMTP server: keeps every email as a file instead of delivering it.

    python -m scripts.mail_sink      listens on 127.0.0.1:$OCTAVIA_SMTP_PORT, writes $OCTAVIA_VAR_DIR/mail/

Each message becomes one `.eml` file whose name sorts by arrival
(`<nanoseconds since the epoch>-<sequence>.eml`), written under a temporary
name and renamed, so a reader never sees half a message. Any login is
accepted, so a local setting of OCTAVIA_SMTP_USERNAME does not break sending.
The integration tests read verification links from here
(tests/integration/mailbox.py).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from pathlib import Path

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from octavia_runtime.config import Config, load


def mail_dir(config: Config) -> Path:
    return config.var_dir / "mail"


class Sink:
    """aiosmtpd handler: one file per message."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._sequence = itertools.count()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        name = f"{time.time_ns():020d}-{next(self._sequence):06d}.eml"
        partial = self.directory / f".{name}.partial"
        assert isinstance(envelope.content, bytes), "SMTP without decode_data keeps the message as bytes"
        partial.write_bytes(envelope.content)
        partial.rename(self.directory / name)
        return "250 Message kept"


def _accept_any_login(*_) -> AuthResult:
    return AuthResult(success=True)


async def start(config: Config) -> asyncio.Server:
    """Listen on 127.0.0.1:<smtp port>; every message lands in `mail_dir(config)`."""
    directory = mail_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    sink = Sink(directory)
    return await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, hostname="octavia-mail-sink", authenticator=_accept_any_login, auth_require_tls=False),
        host="127.0.0.1",
        port=config.smtp_port,
    )


async def main() -> None:
    config = load()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    async with await start(config):
        print(f"mail sink: 127.0.0.1:{config.smtp_port} -> {mail_dir(config)}", flush=True)
        await stopping.wait()


if __name__ == "__main__":
    asyncio.run(main())
