"""Auth's emails: queued on the request path, sent by a background task, kept by the local sink."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from octavia_runtime.config import load
from scripts import mail_sink
from services.auth.mailer import Mailer
from tests.integration.mailbox import messages_to, verification_link, verification_token
from tests.ports import free_ports

EXPIRES = datetime.now(UTC) + timedelta(hours=24)


async def _until(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_down_smtp_server_neither_slows_nor_fails_the_request_and_the_next_email_still_goes(tmp_path):
    (port,) = free_ports(1)  # nothing listens there
    config = load({"OCTAVIA_VAR_DIR": str(tmp_path), "OCTAVIA_SMTP_PORT": str(port)})
    mailer = Mailer(config)
    with capture_logs() as logs:
        sender = asyncio.create_task(mailer.run())
        try:
            started = time.perf_counter()
            mailer.send_verification("ada@example.com", "Ada", "token-1", EXPIRES)
            assert time.perf_counter() - started < 0.05, "queuing an email does not wait for SMTP"
            await _until(lambda: any(log["event"] == "mail.failed" for log in logs))

            async with await mail_sink.start(config):
                mailer.send_verification("ada@example.com", "Ada", "token-2", EXPIRES)
                await _until(lambda: messages_to(config, "ada@example.com"))
        finally:
            sender.cancel()
    failed = next(log for log in logs if log["event"] == "mail.failed")
    assert failed["to"] == "ada@example.com" and failed["error"]
    assert [verification_token(m) for m in messages_to(config, "ada@example.com")] == ["token-2"]


async def test_the_sink_keeps_each_email_in_a_file_named_in_arrival_order(tmp_path):
    (port,) = free_ports(1)
    config = load({"OCTAVIA_VAR_DIR": str(tmp_path), "OCTAVIA_SMTP_PORT": str(port), "OCTAVIA_APP_URL": "https://app.example"})
    mailer = Mailer(config)
    sender = asyncio.create_task(mailer.run())
    try:
        async with await mail_sink.start(config):
            tokens = [f"token-{i}-" + "x" * 60 for i in range(3)]  # long enough to be wrapped in the body
            for token in tokens:
                mailer.send_verification("ada@example.com", "Ada", token, EXPIRES)
            await _until(lambda: len(messages_to(config, "ada@example.com")) == 3)
    finally:
        sender.cancel()
    files = sorted(mail_sink.mail_dir(config).iterdir())
    assert [f.suffix for f in files] == [".eml"] * 3, "nothing half-written is left behind"
    messages = messages_to(config, "ada@example.com")
    assert [verification_token(m) for m in messages] == tokens
    assert verification_link(messages[0]) == f"https://app.example/verify-email?token={tokens[0]}"
    assert messages[0]["From"] == config.mail_from
