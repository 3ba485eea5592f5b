"""What an auth process remembers between calls, kept honest by a Valkey pub/sub channel.

Every authenticated call on every service comes to auth, so what it reads to
answer (an active session, an API key) is remembered in each auth process and
a call costs no round trip. A change that must take effect at once everywhere
(a session ended, a key deleted, a user's details changed) publishes the keys
of what changed on the memory's channel, and every process forgets them: the
one that made the change before it answers, the others within milliseconds.

Two rules make a missed or late message harmless:

- While the subscription is not live (starting, reconnecting) nothing is
  remembered and nothing is answered from memory.
- A value read from the source before a forget message arrived is not kept
  after it: a caller takes a `ticket()` before it reads, and `remember` keeps
  the value only if no message has arrived since. Otherwise a read racing a
  revocation could store the revoked value after its forget went by.

Entries also expire after `max_age_s` as a last bound.
"""

from __future__ import annotations

import asyncio
import time
from typing import Generic, TypeVar

import redis.asyncio as redis
import structlog

log = structlog.get_logger("memory")
T = TypeVar("T")


class Memory(Generic[T]):
    def __init__(self, cache: redis.Redis, channel: str, *, max_age_s: float = 60.0, max_entries: int = 100_000):
        self.cache = cache
        self.channel = channel
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[T, float]] = {}
        self._live = False
        self._generation = 0  # moves on every forget, and whenever `live` changes

    @property
    def live(self) -> bool:
        """Whether the channel is followed, so that memory may answer."""
        return self._live

    def recall(self, key: str) -> T | None:
        if not self._live:
            return None
        hit = self._entries.get(key)
        if hit is None or time.monotonic() - hit[1] >= self.max_age_s:
            return None
        return hit[0]

    def ticket(self) -> int:
        """Take before reading the source; hand to `remember` with what was read."""
        return self._generation

    def remember(self, key: str, value: T, ticket: int) -> None:
        if not self._live or ticket != self._generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (value, time.monotonic())

    async def forget(self, keys: list[str]) -> None:
        """Forget `keys` here at once and in every other process through the channel."""
        if keys:
            self._drop(keys)
            await self.cache.publish(self.channel, " ".join(keys))

    def _drop(self, keys: list[str]) -> None:
        self._generation += 1
        for key in keys:
            self._entries.pop(key, None)

    def _reset(self, live: bool) -> None:
        self._generation += 1
        self._entries.clear()
        self._live = live

    async def follow(self) -> None:
        """Apply other processes' forget messages; run for the life of the process."""
        while True:
            pubsub = self.cache.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        self._drop(message["data"].split())
                    elif message["type"] == "subscribe":
                        # Confirmed: from here on no message is missed. Anything may have
                        # changed while we were not listening, so start empty.
                        self._reset(live=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke
                log.warning("memory.follow_lost", channel=self.channel, error=str(exc) or type(exc).__name__)
            finally:
                self._reset(live=False)
                await pubsub.aclose()
            await asyncio.sleep(0.5)
