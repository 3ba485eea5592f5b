"""Billing's ledger checked straight from its tables, for any test that moves credits.

    assert_ledger_balanced(stack.database_url)   # after the test has moved credits
    holds_of(stack.database_url, ["jobs/…"])     # {"jobs/…": ["CAPTURE"]}: how each hold was settled

Both are plain functions (they run their own event loop in a worker thread),
so sync and async tests can call them alike. The checks read one consistent
snapshot of the database, so credits moving meanwhile cannot make them fail.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
from octavia.billing.v1 import billing_pb2

B = billing_pb2

# Each query finds what breaks one promise of the ledger; every one must come back empty.
_BROKEN = {
    "movements whose entries do not sum to zero": (
        "SELECT movement_id, sum(amount) AS total FROM entries GROUP BY movement_id HAVING sum(amount) <> 0"
    ),
    "movements without entries": "SELECT id FROM movements m WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.movement_id = m.id)",
    "balances that differ from the sums of their entries": """
        WITH sums AS (
            SELECT split_part(account, '/', 2)::uuid AS user_id,
                   coalesce(sum(amount) FILTER (WHERE split_part(account, '/', 3) = 'available'), 0) AS available,
                   coalesce(sum(amount) FILTER (WHERE split_part(account, '/', 3) = 'held'), 0) AS held
            FROM entries WHERE account LIKE 'users/%' GROUP BY 1)
        SELECT user_id, a.available, a.held, s.available AS entries_available, s.held AS entries_held
        FROM accounts a FULL JOIN sums s USING (user_id)
        WHERE a.available IS DISTINCT FROM coalesce(s.available, 0) OR a.held IS DISTINCT FROM coalesce(s.held, 0)""",
    "negative balances": "SELECT user_id, available, held FROM accounts WHERE available < 0 OR held < 0",
    "held credits that differ from the holds still held": f"""
        SELECT a.user_id, a.held, coalesce(sum(h.credits) FILTER (WHERE h.state = {B.HOLD_STATE_HELD}), 0) AS holds
        FROM accounts a LEFT JOIN holds h ON h.user_id = a.user_id GROUP BY a.user_id, a.held
        HAVING a.held <> coalesce(sum(h.credits) FILTER (WHERE h.state = {B.HOLD_STATE_HELD}), 0)""",
    "holds without exactly one HOLD movement, or settled other than once as their state says": f"""
        SELECT h.reference, h.state,
               count(*) FILTER (WHERE m.reason = {B.TRANSACTION_REASON_HOLD}) AS holds,
               count(*) FILTER (WHERE m.reason = {B.TRANSACTION_REASON_CAPTURE}) AS captures,
               count(*) FILTER (WHERE m.reason = {B.TRANSACTION_REASON_RELEASE}) AS releases
        FROM holds h LEFT JOIN movements m ON m.hold_id = h.id GROUP BY h.id
        HAVING count(*) FILTER (WHERE m.reason = {B.TRANSACTION_REASON_HOLD}) <> 1
            OR count(*) FILTER (WHERE m.reason = {B.TRANSACTION_REASON_CAPTURE})
               <> (h.state = {B.HOLD_STATE_CAPTURED})::int
            OR count(*) FILTER (WHERE m.reason = {B.TRANSACTION_REASON_RELEASE})
               <> (h.state = {B.HOLD_STATE_RELEASED})::int""",
}


def _run(coroutine) -> Any:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _snapshot(database_url: str, queries: dict[str, str], *args) -> dict[str, list[asyncpg.Record]]:
    con = await asyncpg.connect(database_url, server_settings={"search_path": "billing"})
    try:
        async with con.transaction(isolation="repeatable_read", readonly=True):
            return {name: await con.fetch(sql, *args) for name, sql in queries.items()}
    finally:
        await con.close()


def assert_ledger_balanced(database_url: str) -> None:
    """Every movement sums to zero, and every balance is the sum of its entries and of its holds."""
    found = _run(_snapshot(database_url, _BROKEN))
    broken = {name: [dict(row) for row in rows[:5]] for name, rows in found.items() if rows}
    assert not broken, f"the ledger is broken: {broken}"


def holds_of(database_url: str, references: list[str]) -> dict[str, list[str]]:
    """For each reference, the reasons (CAPTURE, RELEASE) of the movements that settled its hold, oldest first."""
    query = {
        "settled": "SELECT h.reference, m.reason FROM holds h JOIN movements m ON m.hold_id = h.id"
        f" WHERE h.reference = ANY($1) AND m.reason <> {B.TRANSACTION_REASON_HOLD} ORDER BY m.created_at, m.id"
    }
    rows = _run(_snapshot(database_url, query, references))["settled"]
    settled: dict[str, list[str]] = {reference: [] for reference in references}
    for row in rows:
        settled[row["reference"]].append(B.TransactionReason.Name(row["reason"]).removeprefix("TRANSACTION_REASON_"))
    return settled
