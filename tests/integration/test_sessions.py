"""Sessions remembered in each auth process stay honest: an ended session is refused everywhere at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from octavia_runtime import cache
from services.auth.sessions import SessionInfo, Sessions

pytestmark = pytest.mark.integration

INFO = SessionInfo(str(uuid.uuid4()), "ada@example.com", "Ada", False, datetime.now(UTC).isoformat())


async def _following(sessions: Sessions) -> asyncio.Task:
    task = asyncio.create_task(sessions.follow())
    for _ in range(100):
        if sessions._live:
            return task
        await asyncio.sleep(0.01)
    raise AssertionError("the session feed did not come up")


async def test_a_session_ended_by_one_process_is_refused_by_another_that_remembered_it(stack):
    one, two = Sessions(cache.connect(stack.redis_url)), Sessions(cache.connect(stack.redis_url))
    tasks = [await _following(one), await _following(two)]
    try:
        session = str(uuid.uuid4())
        await one.open(session, INFO, datetime.now(UTC) + timedelta(minutes=5))
        assert await two.get(session) == INFO  # now remembered by the second process
        await one.end([session])
        assert await one.get(session) is None, "the ending process refuses it before it answers"
        for _ in range(100):  # the other process hears of it within milliseconds
            if session not in two._memory:
                break
            await asyncio.sleep(0.01)
        assert await two.get(session) is None
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_process_not_following_the_feed_never_answers_from_memory(stack):
    valkey = cache.connect(stack.redis_url)
    deaf, other = Sessions(valkey), Sessions(cache.connect(stack.redis_url))
    session = str(uuid.uuid4())
    await other.open(session, INFO, datetime.now(UTC) + timedelta(minutes=5))
    assert await deaf.get(session) == INFO
    assert deaf._memory == {}, "without the feed nothing is remembered"
    await other.end([session])
    assert await deaf.get(session) is None


async def test_new_user_details_reach_every_process(stack):
    one, two = Sessions(cache.connect(stack.redis_url)), Sessions(cache.connect(stack.redis_url))
    tasks = [await _following(one), await _following(two)]
    try:
        session = str(uuid.uuid4())
        await one.open(session, INFO, datetime.now(UTC) + timedelta(minutes=5))
        assert (await two.get(session)).email_verified is False
        verified = SessionInfo(INFO.user_id, INFO.email, INFO.display_name, True, INFO.created_at)
        await one.update([session], verified)
        for _ in range(100):
            if session not in two._memory:
                break
            await asyncio.sleep(0.01)
        assert (await two.get(session)).email_verified is True
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
