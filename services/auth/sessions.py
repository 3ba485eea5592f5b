"""Active sessions: Valkey holds them, each auth process remembers what it has read.

Every authenticated call on every service asks whether its session is still
active, so this is the hottest path of the mesh. Valkey holds one key per
active session, `auth:session:<id>`, whose value is a snapshot of the user
(what GetMe returns); the key expires with the session. Each auth process
remembers the sessions it has read (`Memory`), so a call costs no round trip.
Ending a session deletes the key and publishes its id; every auth process
forgets it at once (see memory.py for why that cannot leave a revoked session
alive).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime

import redis.asyncio as redis

from .memory import Memory

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
        self.memory: Memory[SessionInfo] = Memory(cache, CHANNEL, max_age_s=max_age_s, max_entries=max_entries)

    async def get(self, session_id: str) -> SessionInfo | None:
        """The session's user if the session is active, else None."""
        info = self.memory.recall(session_id)
        if info is not None:
            return info
        ticket = self.memory.ticket()
        raw = await self.cache.get(KEY.format(session_id))
        if raw is None:
            return None
        info = SessionInfo(**json.loads(raw))
        self.memory.remember(session_id, info, ticket)
        return info

    async def open(self, session_id: str, info: SessionInfo, expires_at: datetime) -> None:
        await self.cache.set(KEY.format(session_id), json.dumps(asdict(info)), exat=int(expires_at.timestamp()))

    async def update(self, session_ids: list[str], info: SessionInfo) -> None:
        """New user details for active sessions (keeping their expiry)."""
        for session_id in session_ids:
            await self.cache.set(KEY.format(session_id), json.dumps(asdict(info)), keepttl=True, xx=True)
        await self.memory.forget(session_ids)

    async def end(self, session_ids: list[str]) -> None:
        if session_ids:
            await self.cache.delete(*(KEY.format(s) for s in session_ids))
            await self.memory.forget(session_ids)

    async def follow(self) -> None:
        """Apply other processes' ended and changed sessions; run for the life of the process."""
        await self.memory.follow()
