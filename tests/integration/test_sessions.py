"""What each auth process remembers stays honest: an ended session is refused everywhere at once."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from octavia_runtime import cache
from services.auth.memory import Memory
from services.auth.sessions import SessionInfo, Sessions

pytestmark = pytest.mark.integration

INFO = SessionInfo(str(uuid.uuid4()), "ada@example.com", "Ada", False, datetime.now(UTC).isoformat())


@contextlib.asynccontextmanager
async def following(*processes: Sessions | Memory):
    """Each follows its feed, as in a running auth process, for the block's duration."""
    tasks = [asyncio.create_task(process.follow()) for process in processes]
    memories = [process.memory if isinstance(process, Sessions) else process for process in processes]
    try:
        for _ in range(100):
            if all(memory.live for memory in memories):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the session feed did not come up")
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def forgotten(sessions: Sessions, session: str) -> None:
    for _ in range(100):  # the feed reaches other processes within milliseconds
        if sessions.memory.recall(session) is None:
            return
        await asyncio.sleep(0.01)


async def test_a_session_ended_by_one_process_is_refused_by_another_that_remembered_it(stack):
    one, two = Sessions(cache.connect(stack.redis_url)), Sessions(cache.connect(stack.redis_url))
    async with following(one, two):
        session = str(uuid.uuid4())
        await one.open(session, INFO, datetime.now(UTC) + timedelta(minutes=5))
        assert await two.get(session) == INFO
        assert two.memory.recall(session) == INFO, "the second process now answers from memory"
        await one.end([session])
        assert await one.get(session) is None, "the ending process refuses it before it answers"
        await forgotten(two, session)
        assert await two.get(session) is None


async def test_a_process_not_following_the_feed_never_answers_from_memory(stack):
    valkey = cache.connect(stack.redis_url)
    deaf, other = Sessions(valkey), Sessions(cache.connect(stack.redis_url))
    session = str(uuid.uuid4())
    await other.open(session, INFO, datetime.now(UTC) + timedelta(minutes=5))
    assert await deaf.get(session) == INFO
    assert deaf.memory.recall(session) is None, "without the feed nothing is remembered"
    await other.end([session])
    assert await deaf.get(session) is None


async def test_new_user_details_reach_every_process(stack):
    one, two = Sessions(cache.connect(stack.redis_url)), Sessions(cache.connect(stack.redis_url))
    async with following(one, two):
        session = str(uuid.uuid4())
        await one.open(session, INFO, datetime.now(UTC) + timedelta(minutes=5))
        assert (await two.get(session)).email_verified is False
        verified = SessionInfo(INFO.user_id, INFO.email, INFO.display_name, True, INFO.created_at)
        await one.update([session], verified)
        await forgotten(two, session)
        assert (await two.get(session)).email_verified is True


async def test_a_value_read_before_another_process_forgot_it_is_not_remembered_after(stack):
    """A read that raced a revocation: fetched while it was valid, stored after the forget went by."""
    reader, revoker = (Memory(cache.connect(stack.redis_url), "test:memory") for _ in range(2))
    async with following(reader, revoker):
        ticket = reader.ticket()  # the reader starts reading the source...
        await revoker.forget(["key"])  # ...the value is revoked and its forget reaches the reader...
        for _ in range(100):
            if reader.ticket() != ticket:
                break
            await asyncio.sleep(0.01)
        reader.remember("key", "stale", ticket)  # ...then the reader's read comes back
        assert reader.recall("key") is None
        reader.remember("key", "fresh", reader.ticket())
        assert reader.recall("key") == "fresh"
