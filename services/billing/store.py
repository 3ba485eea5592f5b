"""SQL against the billing schema only.

Every write to a user's credits first locks the user's `accounts` row: in a
`Tx` (which opens the account on first touch), or inside the one statement
of a reservation. So the writes of one user are serialized, and a balance
checked under that lock still holds at commit. A movement is posted in one
statement together with what it belongs to (the hold it creates or settles,
the checkout it pays); the entries trigger of migration 0002 keeps
`accounts` equal to the sums of the entries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
from octavia.billing.v1 import billing_pb2
from octavia.jobs.v1 import jobs_pb2

from .pricing import Quote


class Conflict(Exception):
    """A unique key was taken by a concurrent transaction (a grant's request_id)."""


@dataclass(frozen=True)
class Posting:
    """A movement to record: its entries (account, credits) sum to zero."""

    id: UUID
    user_id: UUID
    reason: billing_pb2.TransactionReason
    reference: str
    description: str
    entries: tuple[tuple[str, int], ...]
    hold_id: UUID | None = None
    request_id: str | None = None
    request_hash: bytes | None = None


@dataclass(frozen=True)
class Movement:
    id: UUID
    user_id: UUID
    reason: billing_pb2.TransactionReason
    reference: str
    description: str
    hold_id: UUID | None
    entries: tuple[tuple[str, int], ...]
    request_hash: bytes | None
    created_at: datetime


@dataclass(frozen=True)
class Balance:
    user_id: UUID
    available: int
    held: int
    updated_at: datetime


@dataclass(frozen=True)
class Hold:
    id: UUID
    user_id: UUID
    reference: str
    credits: int
    captured_credits: int
    state: billing_pb2.HoldState
    kind: jobs_pb2.JobKind
    duration_ns: int
    target_language_count: int
    description: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class Checkout:
    id: UUID
    user_id: UUID
    credit_pack: str
    credits: int
    price_minor_units: int
    currency: str
    state: billing_pb2.CheckoutState
    url: str
    success_url: str
    cancel_url: str
    provider_checkout_id: str
    provider_order_id: str | None
    refunded_credits: int
    request_id: str | None
    request_hash: bytes | None
    created_at: datetime
    expire_time: datetime
    complete_time: datetime | None


_BALANCE = "SELECT user_id, available, held, updated_at FROM accounts WHERE user_id = $1"
_HOLD_COLUMNS = (
    "id, user_id, reference, credits, captured_credits, state, kind, duration_ns, target_language_count,"
    " description, created_at, updated_at"
)
_CHECKOUT_COLUMNS = (
    "id, user_id, credit_pack, credits, price_minor_units, currency, state, url, success_url, cancel_url,"
    " provider_checkout_id, provider_order_id, refunded_credits, request_id, request_hash, created_at,"
    " expire_time, complete_time"
)
_MOVEMENTS = (
    "SELECT m.id, m.user_id, m.reason, m.reference, m.description, m.hold_id, m.request_hash, m.created_at,"
    " array_agg(e.account ORDER BY e.id) AS accounts, array_agg(e.amount ORDER BY e.id) AS amounts"
    " FROM movements m JOIN entries e ON e.movement_id = m.id"
)


def _post(only_if: str = "") -> str:
    """A movement and its entries as CTEs with parameters $1..$10 (see _posting_args).

    `only_if` is a condition on earlier CTEs; without one the movement is
    always recorded. clock_timestamp(), not now(), so that two movements of
    one transaction (a welcome grant, then a hold) keep their order.
    """
    return (
        "m AS (INSERT INTO movements (id, user_id, reason, reference, description, hold_id, request_id, request_hash,"
        f" created_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, clock_timestamp() {only_if} RETURNING created_at),"
        " e AS (INSERT INTO entries (movement_id, account, amount, created_at)"
        " SELECT $1, t.account, t.amount, m.created_at"
        " FROM m, unnest($9::text[], $10::bigint[]) WITH ORDINALITY AS t(account, amount, n) ORDER BY t.n)"
    )


_POST = _post()
# A new hold with its HOLD movement, in one statement: only if the user's account (locked here) covers it
# and the reference is new; else nothing is written. Returns the balance before, and the hold if made.
_RESERVE = (
    "WITH a AS (SELECT user_id, available, held, updated_at FROM accounts WHERE user_id = $2 FOR UPDATE),"
    " h AS (INSERT INTO holds (id, user_id, reference, credits, state, kind, duration_ns, target_language_count,"
    " description, created_at, updated_at)"
    " SELECT $6, $2, $11, $12, $13, $14, $15, $16, $5, clock_timestamp(), clock_timestamp() FROM a WHERE a.available >= $12"
    f" ON CONFLICT (reference) DO NOTHING RETURNING {_HOLD_COLUMNS}),"
    f" {_post('WHERE EXISTS (SELECT FROM h)')}"
    " SELECT a.user_id AS account_user_id, a.available, a.held, a.updated_at AS account_updated_at, h.*"
    " FROM a LEFT JOIN h ON true"
)


def _posting_args(p: Posting) -> tuple:
    accounts, amounts = zip(*p.entries, strict=True)
    return (
        p.id, p.user_id, p.reason, p.reference, p.description, p.hold_id, p.request_id, p.request_hash,
        list(accounts), list(amounts),
    )  # fmt: skip


def _movement(p: Posting, created_at: datetime) -> Movement:
    return Movement(p.id, p.user_id, p.reason, p.reference, p.description, p.hold_id, p.entries, p.request_hash, created_at)


def _movement_row(row: asyncpg.Record) -> Movement:
    entries = tuple(zip(row["accounts"], row["amounts"], strict=True))
    return Movement(
        row["id"], row["user_id"], row["reason"], row["reference"], row["description"], row["hold_id"], entries,
        row["request_hash"], row["created_at"],
    )  # fmt: skip


async def _hold_where(db: asyncpg.Pool | asyncpg.Connection, column: str, value: object) -> Hold | None:
    row = await db.fetchrow(f"SELECT {_HOLD_COLUMNS} FROM holds WHERE {column} = $1", value)
    return Hold(**row) if row else None


async def _checkout_where(
    db: asyncpg.Pool | asyncpg.Connection, column: str, value: object, lock: bool = False
) -> Checkout | None:
    row = await db.fetchrow(
        f"SELECT {_CHECKOUT_COLUMNS} FROM checkouts WHERE {column} = $1{' FOR UPDATE' if lock else ''}", value
    )
    return Checkout(**row) if row else None


async def _reserve(
    db: asyncpg.Pool | asyncpg.Connection, posting: Posting, reference: str, quote: Quote, state: int
) -> tuple[Balance | None, Hold | None]:
    """The hold `posting.hold_id` made in `state` if the account covers it and the reference is new.

    Returns (the balance before, the hold or None); (None, None) when the user has no account yet.
    """
    row = await db.fetchrow(
        _RESERVE, *_posting_args(posting), reference, quote.credits, state, quote.kind, quote.duration_ns, quote.languages
    )
    if row is None:
        return None, None
    balance = Balance(row["account_user_id"], row["available"], row["held"], row["account_updated_at"])
    return balance, (Hold(**{column: row[column] for column in Hold.__dataclass_fields__}) if row["id"] else None)


class Tx:
    """One transaction of writes; lock the user's account before touching their credits."""

    def __init__(self, con: asyncpg.Connection):
        self.con = con

    async def lock_account(self, user_id: UUID, opening: Posting | None) -> Balance:
        """Lock the user's account row, opening it first with `opening` posted if it does not exist.

        Two first touches at once insert the row once: the second INSERT waits
        for the first transaction and then does nothing, so `opening` (the
        welcome grant) is posted exactly once per user.
        """
        row = await self.con.fetchrow(_BALANCE + " FOR UPDATE", user_id)
        if row is None:
            created = await self.con.fetchval(
                "INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", user_id
            )
            if created and opening is not None:
                await self.post(opening)
            row = await self.con.fetchrow(_BALANCE + " FOR UPDATE", user_id)
        return Balance(**row)

    async def post(self, posting: Posting) -> Movement:
        """Record a movement; a request_id taken meanwhile raises Conflict."""
        try:
            created_at = await self.con.fetchval(f"WITH {_POST} SELECT created_at FROM m", *_posting_args(posting))
        except asyncpg.UniqueViolationError:
            raise Conflict(posting.request_id) from None
        return _movement(posting, created_at)

    async def movement_by_request(self, request_id: str) -> Movement | None:
        row = await self.con.fetchrow(_MOVEMENTS + " WHERE m.request_id = $1 GROUP BY m.id", request_id)
        return _movement_row(row) if row else None

    # -- holds ---------------------------------------------------------------------------------------

    async def hold(self, hold_id: UUID) -> Hold | None:
        return await _hold_where(self.con, "id", hold_id)

    async def hold_by_reference(self, reference: str) -> Hold | None:
        return await _hold_where(self.con, "reference", reference)

    async def reserve(self, posting: Posting, reference: str, quote: Quote, state: int) -> tuple[Balance | None, Hold | None]:
        """The hold of `posting`, made if the account covers it and the reference is new (see _reserve)."""
        return await _reserve(self.con, posting, reference, quote, state)

    async def settle(self, posting: Posting, state: int, captured_credits: int) -> Hold:
        """Move the hold `posting.hold_id` to `state`, with the movement that settles it."""
        row = await self.con.fetchrow(
            "WITH h AS (UPDATE holds SET state = $11, captured_credits = $12, updated_at = clock_timestamp()"
            f" WHERE id = $6 RETURNING {_HOLD_COLUMNS}), {_POST} SELECT * FROM h",
            *_posting_args(posting),
            state,
            captured_credits,
        )
        return Hold(**row)

    # -- checkouts and webhooks ----------------------------------------------------------------------

    async def record_webhook(self, webhook_id: str, event_type: str) -> bool:
        """Note a webhook as applied; False if it already was (then this transaction must change nothing)."""
        return bool(
            await self.con.fetchval(
                "INSERT INTO webhook_events (id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
                webhook_id,
                event_type,
            )
        )

    async def checkout(self, checkout_id: UUID, *, lock: bool = False) -> Checkout | None:
        return await _checkout_where(self.con, "id", checkout_id, lock)

    async def checkout_by_provider(self, provider_checkout_id: str) -> Checkout | None:
        return await _checkout_where(self.con, "provider_checkout_id", provider_checkout_id)

    async def checkout_by_order(self, order_id: str) -> Checkout | None:
        return await _checkout_where(self.con, "provider_order_id", order_id)

    async def complete_checkout(self, checkout_id: UUID, state: int, order_id: str, posting: Posting) -> None:
        """Mark the checkout paid by `order_id`, with the PURCHASE movement that adds its credits."""
        await self.con.execute(
            "WITH c AS (UPDATE checkouts SET state = $11, provider_order_id = $12, complete_time = clock_timestamp()"
            f" WHERE id = $13), {_POST} SELECT 1",
            *_posting_args(posting),
            state,
            order_id,
            checkout_id,
        )

    async def refund_checkout(self, checkout_id: UUID, state: int, refunded_credits: int, posting: Posting | None) -> None:
        """Record what refunds owe back so far, with the REFUND movement of what was taken back (if any)."""
        if posting is None:
            await self.con.execute(
                "UPDATE checkouts SET state = $1, refunded_credits = $2 WHERE id = $3", state, refunded_credits, checkout_id
            )
            return
        await self.con.execute(
            f"WITH c AS (UPDATE checkouts SET state = $11, refunded_credits = $12 WHERE id = $13), {_POST} SELECT 1",
            *_posting_args(posting),
            state,
            refunded_credits,
            checkout_id,
        )


class BillingStore:
    def __init__(self, pool: asyncpg.Pool):
        self.pool = pool

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.pool.acquire() as con, con.transaction():
            yield Tx(con)

    async def balance(self, user_id: UUID) -> Balance | None:
        """The user's balance; None before their account is opened."""
        row = await self.pool.fetchrow(_BALANCE, user_id)
        return Balance(**row) if row else None

    async def reserve(self, posting: Posting, reference: str, quote: Quote, state: int) -> tuple[Balance | None, Hold | None]:
        """Tx.reserve in a statement of its own: the common case of a reservation in one round trip."""
        return await _reserve(self.pool, posting, reference, quote, state)

    async def hold(self, hold_id: UUID) -> Hold | None:
        return await _hold_where(self.pool, "id", hold_id)

    async def hold_by_reference(self, reference: str) -> Hold | None:
        return await _hold_where(self.pool, "reference", reference)

    async def movements(
        self, user_id: UUID, limit: int, *, reason: int = 0, after: tuple[datetime, UUID] | None = None
    ) -> Sequence[Movement]:
        """The user's movements, newest first, after a keyset position."""
        where, args = ["m.user_id = $1"], list[object]([user_id])
        if reason:
            args.append(reason)
            where.append(f"m.reason = ${len(args)}")
        if after is not None:
            args.extend(after)
            where.append(f"(m.created_at, m.id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit)
        rows = await self.pool.fetch(
            f"{_MOVEMENTS} WHERE {' AND '.join(where)} GROUP BY m.id ORDER BY m.created_at DESC, m.id DESC LIMIT ${len(args)}",
            *args,
        )
        return [_movement_row(row) for row in rows]

    async def checkout(self, checkout_id: UUID) -> Checkout | None:
        return await _checkout_where(self.pool, "id", checkout_id)

    async def checkout_by_request(self, user_id: UUID, request_id: str) -> Checkout | None:
        row = await self.pool.fetchrow(
            f"SELECT {_CHECKOUT_COLUMNS} FROM checkouts WHERE user_id = $1 AND request_id = $2", user_id, request_id
        )
        return Checkout(**row) if row else None

    async def insert_checkout(self, checkout: Checkout) -> Checkout | None:
        """Store a new checkout; None if the user's request_id was taken meanwhile (a concurrent repeat)."""
        row = await self.pool.fetchrow(
            f"INSERT INTO checkouts ({_CHECKOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
            f" $13, $14, $15, $16, $17, $18) ON CONFLICT (user_id, request_id) DO NOTHING RETURNING {_CHECKOUT_COLUMNS}",
            *(getattr(checkout, name.strip()) for name in _CHECKOUT_COLUMNS.split(",")),
        )
        return Checkout(**row) if row else None
