"""The emails auth sends, through SMTP, off the request path.

A request only queues its email; one background task sends the queue. So an
SMTP server that is slow or down never slows or fails a sign-up: the failure
is logged and the user can ask for the email again (ResendVerificationEmail).
A queue that fills up (SMTP down under heavy sign-up) drops new emails the
same way rather than growing without bound.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import urlencode

import aiosmtplib
import structlog

from octavia_runtime.config import Config

log = structlog.get_logger("mail")
QUEUE_SIZE = 1000
SEND_TIMEOUT_S = 15


class Mailer:
    def __init__(self, config: Config):
        self.config = config
        self._queue: asyncio.Queue[EmailMessage] = asyncio.Queue(QUEUE_SIZE)

    def send_verification(self, to: str, display_name: str, token: str, expires_at: datetime) -> None:
        link = f"{self.config.app_url}/verify-email?{urlencode({'token': token})}"
        self._send(
            to,
            "Confirm your email address for Octavia",
            f"Hello {display_name},\n\n"
            f"Please confirm that this is your email address by opening this link:\n\n{link}\n\n"
            f"The link works once, until {expires_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC.\n"
            "If you did not sign up for Octavia, ignore this email.\n",
        )

    def _send(self, to: str, subject: str, body: str) -> None:
        message = EmailMessage()
        message["From"] = self.config.mail_from
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(usegmt=True)
        message["Message-ID"] = make_msgid(domain="octavia")
        message.set_content(body)
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            log.error("mail.dropped", to=to, subject=subject, reason="queue full: the SMTP server is not keeping up")

    async def run(self) -> None:
        """Send queued emails one by one; run for the life of the process."""
        config = self.config
        while True:
            message = await self._queue.get()
            try:
                await aiosmtplib.send(
                    message,
                    hostname=config.smtp_host,
                    port=config.smtp_port,
                    username=config.smtp_username or None,
                    password=config.smtp_password or None,
                    use_tls=config.smtp_security == "tls",
                    start_tls=config.smtp_security == "starttls",
                    timeout=SEND_TIMEOUT_S,
                )
            except Exception as exc:  # noqa: BLE001 - a failed email must not stop the ones after it
                log.warning("mail.failed", to=message["To"], subject=message["Subject"], error=str(exc) or type(exc).__name__)
            else:
                log.info("mail.sent", to=message["To"], subject=message["Subject"])
