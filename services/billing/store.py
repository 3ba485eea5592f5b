"""SQL against the billing schema only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class BalanceRow:
    available: int
    held: int
    updated_at: datetime | None


def user_account(user_id: str) -> str:
    return f"users/{user_id}/available"


def held_account(user_id: str) -> str:
    return f"users/{user_id}/held"


class BillingStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    async def balance(self, user_id: str) -> BalanceRow:
        """The user's balances, summed from the ledger (zero for a user with no entries)."""
        row = await self.pool.fetchrow(
            "SELECT coalesce(sum(amount) FILTER (WHERE account = $1), 0)::bigint AS available,"
            " coalesce(sum(amount) FILTER (WHERE account = $2), 0)::bigint AS held,"
            " max(created_at) AS updated_at"
            " FROM entries WHERE account IN ($1, $2)",
            user_account(user_id),
            held_account(user_id),
        )
        return BalanceRow(row["available"], row["held"], row["updated_at"])
