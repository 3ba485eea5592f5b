"""The credits ledger: which accounts each movement touches, and the rules of holds and grants.

Accounts, as billing.proto's LedgerEntry names them:
- `users/<id>/available` (spendable) and `users/<id>/held` (reserved by jobs);
- `system/grants` and `system/purchases`, where credits come from (they go
  negative), `system/revenue` (captured job charges) and `system/refunds`.

Every flow that changes a user's credits is one store transaction that
locks the user's account first, decides under that lock, and posts a
balanced movement; so concurrent calls for one user are serialized, a
balance never goes below zero, and a hold is settled once:

- a new account opens with `welcome_credits` (a GRANT, reference
  `welcome`) in the transaction that first touches it;
- ReserveCredits moves the quoted price from available to held, once per
  reference (a repeat returns the same hold);
- CaptureHold moves it from held to `system/revenue` (a partial capture gives
  the rest back to available); ReleaseHold gives it all back;
- GrantCredits adds credits from `system/grants`, or takes them back as an
  ADJUSTMENT (never more than is available).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from datetime import datetime
from uuid import UUID

import grpc
from octavia.billing.v1 import billing_pb2

from octavia_runtime.errors import ApiError, invalid_argument, not_found, request_id_reused
from octavia_runtime.validation import max_length

from .pricing import Pricing, Quote
from .store import Balance, BillingStore, Conflict, Hold, Movement, Posting

B = billing_pb2
SYSTEM_GRANTS = "system/grants"
SYSTEM_PURCHASES = "system/purchases"
SYSTEM_REVENUE = "system/revenue"
SYSTEM_REFUNDS = "system/refunds"
WELCOME_REFERENCE = "welcome"
# The API's declared limits (validation.py refuses longer values before a call gets here); Ledger's
# own callers are held to them too.
MAX_REFERENCE = max_length(B.ReserveCreditsRequest, "reference")
MAX_DESCRIPTION = max_length(B.ReserveCreditsRequest, "description")
MAX_REQUEST_ID = max_length(B.GrantCreditsRequest, "request_id")
MAX_GRANT = 10**12


def available_account(user_id: UUID) -> str:
    return f"users/{user_id}/available"


def held_account(user_id: UUID) -> str:
    return f"users/{user_id}/held"


def changes(user_id: UUID, entries: tuple[tuple[str, int], ...]) -> tuple[int, int]:
    """How a movement changes the user's (available, held) credits."""
    available, held = available_account(user_id), held_account(user_id)
    return (
        sum(credits for account, credits in entries if account == available),
        sum(credits for account, credits in entries if account == held),
    )


def after(balance: Balance, entries: tuple[tuple[str, int], ...], at: datetime) -> Balance:
    """The balance once `entries` are posted (computed under the account lock, so it is exact)."""
    available, held = changes(balance.user_id, entries)
    return replace(balance, available=balance.available + available, held=balance.held + held, updated_at=at)


def insufficient_credits(needed: int, available: int) -> ApiError:
    return ApiError(
        grpc.StatusCode.FAILED_PRECONDITION,
        "INSUFFICIENT_CREDITS",
        f"this needs {needed} credits and {available} are available",
        metadata={"needed": str(needed), "available": str(available)},
    )


def _posting(
    user_id: UUID, reason: B.TransactionReason, reference: str, description: str, *entries: tuple[str, int], **extra
) -> Posting:
    """A movement with its zero entries left out (an entry moves at least one credit)."""
    kept = tuple((account, credits) for account, credits in entries if credits)
    return Posting(uuid.uuid4(), user_id, reason, reference, description, kept, **extra)


def welcome_posting(user_id: UUID, credits: int) -> Posting:
    return _posting(
        user_id, B.TRANSACTION_REASON_GRANT, WELCOME_REFERENCE, "Welcome credits",
        (SYSTEM_GRANTS, -credits), (available_account(user_id), credits),
    )  # fmt: skip


def hold_posting(user_id: UUID, hold_id: UUID, reference: str, credits: int, description: str) -> Posting:
    return _posting(
        user_id, B.TRANSACTION_REASON_HOLD, reference, description,
        (available_account(user_id), -credits), (held_account(user_id), credits),
        hold_id=hold_id,
    )  # fmt: skip


def capture_posting(hold: Hold, charge: int) -> Posting:
    """Charge `charge` of a held hold to revenue; the rest goes back to available."""
    return _posting(
        hold.user_id, B.TRANSACTION_REASON_CAPTURE, hold.reference, hold.description,
        (held_account(hold.user_id), -hold.credits),
        (SYSTEM_REVENUE, charge),
        (available_account(hold.user_id), hold.credits - charge),
        hold_id=hold.id,
    )  # fmt: skip


def release_posting(hold: Hold) -> Posting:
    return _posting(
        hold.user_id, B.TRANSACTION_REASON_RELEASE, hold.reference, hold.description,
        (held_account(hold.user_id), -hold.credits), (available_account(hold.user_id), hold.credits),
        hold_id=hold.id,
    )  # fmt: skip


def grant_posting(user_id: UUID, credits: int, description: str, reference: str, request_id: str, request_hash: bytes) -> Posting:
    """Credits from system/grants (a GRANT), or back to it when negative (an ADJUSTMENT)."""
    return _posting(
        user_id, B.TRANSACTION_REASON_GRANT if credits > 0 else B.TRANSACTION_REASON_ADJUSTMENT, reference, description,
        (SYSTEM_GRANTS, -credits), (available_account(user_id), credits),
        request_id=request_id or None, request_hash=request_hash if request_id else None,
    )  # fmt: skip


def purchase_posting(user_id: UUID, reference: str, credits: int, description: str) -> Posting:
    return _posting(
        user_id, B.TRANSACTION_REASON_PURCHASE, reference, description,
        (SYSTEM_PURCHASES, -credits), (available_account(user_id), credits),
    )  # fmt: skip


def refund_posting(user_id: UUID, reference: str, credits: int, description: str) -> Posting:
    return _posting(
        user_id, B.TRANSACTION_REASON_REFUND, reference, description,
        (available_account(user_id), -credits), (SYSTEM_REFUNDS, credits),
    )  # fmt: skip


def _validate_text(bad: dict[str, str], field: str, value: str, limit: int, *, required: bool = False) -> None:
    if required and not value.strip():
        bad[field] = "required"
    elif len(value) > limit:
        bad[field] = f"at most {limit} characters"


class Ledger:
    def __init__(self, store: BillingStore, pricing: Pricing, welcome_credits: int):
        self.store = store
        self.pricing = pricing
        self.welcome_credits = welcome_credits

    def opening(self, user_id: UUID) -> Posting | None:
        """The welcome grant a new account opens with (none when welcome_credits is 0)."""
        return welcome_posting(user_id, self.welcome_credits) if self.welcome_credits else None

    async def balance(self, user_id: UUID) -> Balance:
        """The user's balance, opening their account on first touch."""
        balance = await self.store.balance(user_id)
        if balance is None:
            async with self.store.transaction() as tx:
                balance = await tx.lock_account(user_id, self.opening(user_id))
        return balance

    # -- holds ---------------------------------------------------------------------------------------

    async def reserve(self, user_id: UUID, reference: str, usage: B.Usage, description: str) -> tuple[Hold, Balance]:
        """Hold the price of `usage` under `reference`; a repeat with the same usage returns the first hold."""
        bad: dict[str, str] = {}
        _validate_text(bad, "reference", reference, MAX_REFERENCE, required=True)
        _validate_text(bad, "description", description, MAX_DESCRIPTION)
        if bad:
            raise invalid_argument(bad)
        quote = self.pricing.quote(usage)
        posting = hold_posting(user_id, uuid.uuid4(), reference, quote.credits, description)
        # The common case in one statement: an open account that covers the price, and a new reference.
        balance, held = await self.store.reserve(posting, reference, quote, B.HOLD_STATE_HELD)
        if held is None:  # else, under the account lock: a new account, a repeat, or not enough credits
            async with self.store.transaction() as tx:
                balance = await tx.lock_account(user_id, self.opening(user_id))
                existing = await tx.hold_by_reference(reference)
                if existing is not None:
                    return _same_hold(existing, user_id, quote), balance
                if balance.available < quote.credits:
                    raise insufficient_credits(quote.credits, balance.available)
                balance, held = await tx.reserve(posting, reference, quote, B.HOLD_STATE_HELD)
                if held is None:  # another user's reservation took this reference meanwhile
                    raise _reference_reused(await tx.hold_by_reference(reference))
        assert balance is not None, "a hold was made, so its account's row was read"
        return held, after(balance, posting.entries, held.created_at)

    async def hold(self, *, hold_id: UUID | None = None, reference: str = "") -> Hold:
        hold = await (self.store.hold(hold_id) if hold_id else self.store.hold_by_reference(reference))
        if hold is None:
            raise not_found("hold", f"holds/{hold_id}" if hold_id else reference)
        return hold

    async def capture(self, hold_id: UUID, credits: int) -> Hold:
        """Charge `credits` of the hold (0: all of it) and give the rest back. Idempotent for the same amount."""
        found = await self.hold(hold_id=hold_id)
        if not 0 <= credits <= found.credits:
            raise invalid_argument({"credits": f"between 0 (the whole hold) and the hold's {found.credits} credits"})
        charge = credits or found.credits
        async with self.store.transaction() as tx:
            await tx.lock_account(found.user_id, None)
            current = await tx.hold(hold_id)  # under the account lock: no other settlement can interleave
            assert current is not None, "found above, and holds are never deleted (trigger holds_never_deleted)"
            if current.state == B.HOLD_STATE_CAPTURED and current.captured_credits == charge:
                return current
            _refuse_settled(current)
            return await tx.settle(capture_posting(current, charge), B.HOLD_STATE_CAPTURED, charge)

    async def release(self, hold_id: UUID) -> Hold:
        """Give the whole hold back. Idempotent."""
        found = await self.hold(hold_id=hold_id)
        async with self.store.transaction() as tx:
            await tx.lock_account(found.user_id, None)
            current = await tx.hold(hold_id)
            assert current is not None, "found above, and holds are never deleted (trigger holds_never_deleted)"
            if current.state == B.HOLD_STATE_RELEASED:
                return current
            _refuse_settled(current)
            return await tx.settle(release_posting(current), B.HOLD_STATE_RELEASED, 0)

    # -- grants --------------------------------------------------------------------------------------

    async def grant(
        self, user_id: UUID, credits: int, description: str, reference: str, request_id: str
    ) -> tuple[Movement, Balance]:
        """Add credits (or take them back when negative); a repeated request_id returns the first grant."""
        bad: dict[str, str] = {}
        if credits == 0 or abs(credits) > MAX_GRANT:
            bad["credits"] = f"not 0, and at most {MAX_GRANT} either way"
        _validate_text(bad, "description", description, MAX_DESCRIPTION, required=True)
        _validate_text(bad, "reference", reference, MAX_REFERENCE)
        _validate_text(bad, "request_id", request_id, MAX_REQUEST_ID)
        if bad:
            raise invalid_argument(bad)
        request_hash = hashlib.sha256(f"{user_id}\n{credits}\n{description}\n{reference}".encode()).digest()
        try:
            async with self.store.transaction() as tx:
                balance = await tx.lock_account(user_id, self.opening(user_id))
                if request_id:
                    first = await tx.movement_by_request(request_id)
                    if first is not None:
                        if first.request_hash != request_hash:
                            raise request_id_reused("grant")
                        return first, balance
                if balance.available + credits < 0:
                    raise insufficient_credits(-credits, balance.available)
                movement = await tx.post(grant_posting(user_id, credits, description, reference, request_id, request_hash))
        except Conflict:  # the same request_id, for another user, at the same moment
            raise request_id_reused("grant") from None
        return movement, after(balance, movement.entries, movement.created_at)

    async def movements(self, user_id: UUID, limit: int, reason: int, after_key: tuple[datetime, UUID] | None) -> list[Movement]:
        """The user's movements, newest first; the first look opens the account (so the welcome grant shows)."""
        await self.balance(user_id)
        return list(await self.store.movements(user_id, limit, reason=reason, after=after_key))


def _same_hold(hold: Hold, user_id: UUID, quote: Quote) -> Hold:
    """The hold a repeated reservation asks for, if it asks for the same; else REFERENCE_REUSED."""
    same = (
        hold.user_id == user_id
        and hold.kind == quote.kind
        and hold.duration_ns == quote.duration_ns
        and hold.target_language_count == quote.languages
    )
    if not same:
        raise _reference_reused(hold)
    return hold


def _reference_reused(hold: Hold | None) -> ApiError:
    return ApiError(
        grpc.StatusCode.ALREADY_EXISTS,
        "REFERENCE_REUSED",
        "a hold with this reference exists for another user or usage",
        metadata={"hold": f"holds/{hold.id}"} if hold else None,
    )


def _refuse_settled(hold: Hold) -> None:
    """A hold that went the other way (or was captured for another amount) cannot be settled again."""
    if hold.state == B.HOLD_STATE_RELEASED:
        raise ApiError(
            grpc.StatusCode.FAILED_PRECONDITION, "HOLD_RELEASED", f"holds/{hold.id} was released",
            metadata={"hold": f"holds/{hold.id}"},
        )  # fmt: skip
    if hold.state == B.HOLD_STATE_CAPTURED:
        raise ApiError(
            grpc.StatusCode.FAILED_PRECONDITION, "HOLD_CAPTURED",
            f"holds/{hold.id} was captured ({hold.captured_credits} credits)",
            metadata={"hold": f"holds/{hold.id}", "captured_credits": str(hold.captured_credits)},
        )  # fmt: skip
