"""The emails the stack sent, as the local SMTP sink keeps them (scripts/mail_sink.py)."""

from __future__ import annotations

import email
import re
import time
from email.message import EmailMessage
from email.policy import default
from urllib.parse import parse_qs, urlparse

from octavia_runtime.config import Config
from scripts.mail_sink import mail_dir

_LINK = re.compile(r"\S+/verify-email\?\S+")


def messages_to(config: Config, address: str) -> list[EmailMessage]:
    """Every email to `address`, oldest first."""
    messages = []
    for path in sorted(mail_dir(config).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=default)
        if message["To"] and message["To"].addresses[0].addr_spec == address:
            messages.append(message)
    return messages


def wait_for_message(config: Config, address: str, *, count: int = 1, timeout_s: float = 10.0) -> EmailMessage:
    """The `count`-th email to `address`, waiting up to `timeout_s` for it to arrive."""
    deadline = time.monotonic() + timeout_s
    while True:
        messages = messages_to(config, address)
        if len(messages) >= count:
            return messages[count - 1]
        if time.monotonic() >= deadline:
            raise AssertionError(f"{len(messages)} email(s) to {address} after {timeout_s} s; expected {count}")
        time.sleep(0.05)


def verification_link(message: EmailMessage) -> str:
    match = _LINK.search(message.get_body(("plain",)).get_content())
    assert match, "the email holds no verification link"
    return match.group()


def verification_token(message: EmailMessage) -> str:
    return parse_qs(urlparse(verification_link(message)).query)["token"][0]
