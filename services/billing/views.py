"""The API's messages built from the store's rows."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import duration_pb2
from octavia.billing.v1 import billing_pb2

from octavia_runtime.config import CreditPack
from octavia_runtime.resources import timestamp

from . import checkouts, ledger
from .pricing import NANOS_PER_S
from .store import Balance, Checkout, Hold, Movement

B = billing_pb2


def balance_message(balance: Balance) -> B.Balance:
    return B.Balance(
        user=f"users/{balance.user_id}",
        available_credits=balance.available,
        held_credits=balance.held,
        update_time=timestamp(balance.updated_at),
    )


def hold_message(hold: Hold) -> B.Hold:
    seconds, nanos = divmod(hold.duration_ns, NANOS_PER_S)
    message = B.Hold(
        name=f"holds/{hold.id}",
        user=f"users/{hold.user_id}",
        reference=hold.reference,
        credits=hold.credits,
        captured_credits=hold.captured_credits,
        state=hold.state,
        usage=B.Usage(
            kind=hold.kind,
            duration=duration_pb2.Duration(seconds=seconds, nanos=nanos),
            target_language_count=hold.target_language_count,
        ),
        create_time=timestamp(hold.created_at),
    )
    if hold.state != B.HOLD_STATE_HELD:  # "when the hold was captured or released"
        message.update_time.CopyFrom(timestamp(hold.updated_at))
    return message


def transaction_message(movement: Movement) -> B.Transaction:
    available, held = ledger.changes(movement.user_id, movement.entries)
    return B.Transaction(
        name=f"transactions/{movement.id}",
        user=f"users/{movement.user_id}",
        reason=movement.reason,
        available_change=available,
        held_change=held,
        reference=movement.reference,
        hold=f"holds/{movement.hold_id}" if movement.hold_id else "",
        description=movement.description,
        entries=[B.LedgerEntry(account=account, credits=credits) for account, credits in movement.entries],
        create_time=timestamp(movement.created_at),
    )


def credit_pack_message(pack: CreditPack) -> B.CreditPack:
    return B.CreditPack(
        name=f"creditPacks/{pack.id}",
        display_name=pack.display_name,
        credits=pack.credits,
        price_minor_units=pack.price_minor_units,
        currency_code=pack.currency,
    )


def checkout_message(checkout: Checkout) -> B.Checkout:
    expired = checkouts.expired(checkout, datetime.now(UTC))
    message = B.Checkout(
        name=f"checkouts/{checkout.id}",
        user=f"users/{checkout.user_id}",
        credit_pack=f"creditPacks/{checkout.credit_pack}",
        credits=checkout.credits,
        price_minor_units=checkout.price_minor_units,
        currency_code=checkout.currency,
        state=B.CHECKOUT_STATE_EXPIRED if expired else checkout.state,
        url=checkout.url,
        create_time=timestamp(checkout.created_at),
        expire_time=timestamp(checkout.expire_time),
    )
    if checkout.complete_time is not None:
        message.complete_time.CopyFrom(timestamp(checkout.complete_time))
    return message
