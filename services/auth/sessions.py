"""Active sessions: Valkey holds them, each auth process remembers what it has read.

Every authenticated call on every service asks whether its session is still
active, so this is the hottest path of the mesh. Valkey holds one key per
active session, `auth:session:<id>`, whose value is a snapshot of the user
(what GetMe returns); the key expires with the session. Each auth process
keeps the sessions it has read in memory, so a call costs no round trip.

What keeps that memory honest is a pub/sub channel: ending a session deletes
the key and publishes the session id; every auth process drops it at once
(the one that ended it, before it answers). While the subscription is not
live (starting, reconnecting) the memory is cleared and bypassed, so a
missed message can never keep a revoked session alive. Entries also expire
after `max_age_s` as a last bound.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from datetime import datetime

import redis.asyncio as redis
import structlog

log = structlog.get_logger("sessions")

KEY = "auth:session:{}"
CHANNEL = "auth:sessions:ended"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """The user behind an active session, as GetMe shows it."""

    user_id: str
    email: str
    display_name: str
    email_verified: bool
    created_at: str  # ISO 8601

    @property
    def created(self) -> datetime:
        return datetime.fromisoformat(self.created_at)


class Sessions:
    def __init__(self, cache: redis.Redis, *, max_age_s: float = 60.0, max_entries: int = 100_000):
        self.cache = cache
        self.max_age_s = max_age_s
        self.max_entries = max_entries
        self._memory: dict[str, tuple[SessionInfo, float]] = {}
        self._live = False

    async def get(self, session_id: str) -> SessionInfo | None:
        """The session's user if the session is active, else None."""
        if self._live:
            hit = self._memory.get(session_id)
            if hit is not None and time.monotonic() - hit[1] < self.max_age_s:
                return hit[0]
        raw = await self.cache.get(KEY.format(session_id))
        if raw is None:
            return None
        info = SessionInfo(**json.loads(raw))
        if self._live:
            if len(self._memory) >= self.max_entries:
                self._memory.clear()
            self._memory[session_id] = (info, time.monotonic())
        return info

    async def open(self, session_id: str, info: SessionInfo, expires_at: datetime) -> None:
        await self.cache.set(KEY.format(session_id), json.dumps(asdict(info)), exat=int(expires_at.timestamp()))

    async def update(self, session_ids: list[str], info: SessionInfo) -> None:
        """New user details for active sessions (keeping their expiry)."""
        for session_id in session_ids:
            await self.cache.set(KEY.format(session_id), json.dumps(asdict(info)), keepttl=True, xx=True)
        await self._forget(session_ids)

    async def end(self, session_ids: list[str]) -> None:
        if session_ids:
            await self.cache.delete(*(KEY.format(s) for s in session_ids))
            await self._forget(session_ids)

    async def _forget(self, session_ids: list[str]) -> None:
        for session_id in session_ids:
            self._memory.pop(session_id, None)
        if session_ids:
            await self.cache.publish(CHANNEL, " ".join(session_ids))

    async def follow(self) -> None:
        """Apply other processes' ended sessions; run for the life of the process."""
        while True:
            pubsub = self.cache.pubsub()
            try:
                await pubsub.subscribe(CHANNEL)
                self._memory.clear()  # anything may have ended while we were not listening
                self._live = True
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        for session_id in message["data"].split():
                            self._memory.pop(session_id, None)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect whatever broke
                log.warning("sessions.follow_lost", error=str(exc) or type(exc).__name__)
            finally:
                self._live = False
                self._memory.clear()
                await pubsub.aclose()
            await asyncio.sleep(0.5)
