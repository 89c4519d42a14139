"""The three-failure rule wired to the ledger: per (account, address) state in SQL, suppression on disable.

Contract, Annex 1, "Obligations du Client" (iii): « après trois (3) échecs de la distribution d'un e-mail,
désactiver définitivement les adresses e-mail concernées ». The rule itself is `guardrails.failures`; what
counts is decided by `guardrails.bounce_policy` (hard bounces and soft failures whose retries are exhausted;
policy blocks and rate limits say nothing about the recipient and are not counted). A retry still scheduled
(DEFERRED) is not an outcome: it is counted when it becomes final (FAILED, "retries exhausted").

`AddressFailureSink` consumes the dispatcher's outcomes; `apply_outcomes` is the same logic for any other
source of final outcomes (asynchronous DSNs parsed by the tracking slice). In relay mode the hand-off "success"
is only the smarthost's acceptance: when a DSN later reports that very message failed, the reset it caused is
undone (the history is replayed without it), so a relay cannot hide an address that always bounces.

SMS numbers (issue 6) follow the same rule per (account, number), with `channel=Channel.SMS` on the outcome:
what counts is `guardrails.sms_failures` (21211 / 21614 / 30005 / 30006 count, 30007 carrier filtering and
21610 do not), at message creation (`from_recorded`: FAILED with the Twilio code in `ledger.Outcome.code`) or
in a status callback (`apply_outcomes`, wired by `envoi.composition.twilio_router`). Twilio accepting a
message is not a delivery: only a `delivered` status callback resets an SMS number's count. A disabled number
gets a `disabled` suppression on the SMS channel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from crm import ledger, webhooks
from crm.db import as_utc, utcnow
from crm.domain import Channel, MessageStatus, SuppressionReason
from crm.schema import address_failures
from guardrails import failures
from guardrails.bounce_policy import FailureClass, Reason, ReplyClass, classify_reply
from guardrails.policy import GuardrailPolicy
from guardrails.sms_failures import classify_sms_failure
from sender.hooks import Recorded

HISTORY_LIMIT = 20  # outcomes kept per address as evidence (the last ones)
EXHAUSTED_PREFIX = "retries exhausted"  # sender.dispatcher's error text for a soft failure out of retries


@dataclass(frozen=True, slots=True)
class AddressOutcome:
    """One final outcome for an address: delivered, or a failure with the transport's (or a DSN's) reply."""

    account_id: int
    address: str
    delivered: bool
    code: int | None = None
    enhanced: str | None = None
    text: str = ""
    retries_exhausted: bool = False
    message_id: int | None = None
    campaign_id: int | None = None
    channel: Channel = Channel.EMAIL  # SMS: `code` is the Twilio error code, `enhanced` unused


@dataclass(frozen=True, slots=True)
class Disabled:
    account_id: int
    address: str
    cause: str
    history: list[dict[str, Any]]


def classify(o: AddressOutcome) -> tuple[ReplyClass, failures.Outcome]:
    """The bounce policy's class of the reply, and the 3-failure rule's input."""
    reply = classify_reply(o.code, o.enhanced, o.text)
    counts = reply.counts_against_recipient or (o.retries_exhausted and reply.failure_class is FailureClass.SOFT)
    user_unknown = reply.failure_class is FailureClass.HARD and reply.reason is Reason.USER_UNKNOWN
    return reply, failures.Outcome(delivered=False, counts_against_recipient=counts, is_user_unknown=user_unknown)


def _judge(o: AddressOutcome) -> tuple[dict[str, Any], failures.Outcome]:
    """The history entry's detail and the 3-failure rule's input of one failure, per channel."""
    if o.channel is Channel.SMS:
        sms = classify_sms_failure(o.code)
        return ({"channel": Channel.SMS.value, "code": o.code, "class": sms.failure_class.value},
                sms.outcome)
    reply, outcome = classify(o)
    return ({"code": o.code, "status": o.enhanced, "class": reply.failure_class.value,
             "reason": reply.reason.value}, outcome)


def _sms_from_recorded(r: Recorded) -> AddressOutcome | None:
    """A synchronous Twilio refusal at message creation (FAILED, the Twilio code in the ledger outcome).
    Twilio's acceptance (SENT) is no delivery: the `delivered` status callback resets the count instead."""
    m, o = r.message, r.outcome
    if o.status != MessageStatus.FAILED or o.code is None or (o.error or "").startswith("render:"):
        return None
    return AddressOutcome(m["account_id"], str(m["recipient"]), False, o.code, None, o.error or "",
                          (o.error or "").startswith(EXHAUSTED_PREFIX), m["id"], m["campaign_id"], Channel.SMS)


def from_recorded(batch: Sequence[Recorded]) -> list[AddressOutcome]:
    """Final outcomes of a dispatch batch: e-mail SENT, or FAILED after a hand-off; SMS refused by Twilio at
    creation. The rest is not final."""
    out: list[AddressOutcome] = []
    for r in batch:
        m = r.message
        if not m.get("recipient"):
            continue
        if m.get("channel") == Channel.SMS.value:
            sms = _sms_from_recorded(r)
            if sms is not None:
                out.append(sms)
            continue
        if m.get("channel", Channel.EMAIL.value) != Channel.EMAIL.value:
            continue
        if r.outcome.status == MessageStatus.SENT:
            out.append(AddressOutcome(m["account_id"], str(m["recipient"]).lower(), True,
                                      message_id=m["id"], campaign_id=m["campaign_id"]))
        elif r.outcome.status == MessageStatus.FAILED and r.result is not None:
            out.append(AddressOutcome(
                m["account_id"], str(m["recipient"]).lower(), False, r.result.code, r.result.enhanced,
                r.result.text or "", (r.outcome.error or "").startswith(EXHAUSTED_PREFIX), m["id"], m["campaign_id"]))
    return out


def _ins(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(address_failures)


def _entry(o: AddressOutcome, at: datetime, detail: dict[str, Any] | None, counted: bool) -> dict[str, Any]:
    e: dict[str, Any] = {"at": at.isoformat(), "message_id": o.message_id, "campaign_id": o.campaign_id,
                         "delivered": o.delivered}
    if detail is not None:
        e.update(detail)
        e.update({"counted": counted, "text": o.text[:200]})
    return e


def _is_success_of(entry: dict[str, Any], message_id: int) -> bool:
    return bool(entry.get("delivered")) and entry.get("message_id") == message_id


def _replay(history: Sequence[dict[str, Any]]) -> int:
    """Counted failures since the last success, from the kept history."""
    count = 0
    for h in history:
        count = 0 if h.get("delivered") else count + (1 if h.get("counted") else 0)
    return count


def apply_outcomes(conn: Connection, outcomes: Sequence[AddressOutcome],
                   policy_of: Callable[[int], GuardrailPolicy]) -> list[Disabled]:
    """Apply final outcomes in order (one transaction); returns the addresses disabled by them.

    A disabled address gets a `disabled` suppression, and an `address.disabled` webhook is queued (outbox)."""
    if not outcomes:
        return []
    now = utcnow()
    keys = {(o.account_id, o.address) for o in outcomes}
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    by_account: dict[int, list[str]] = {}
    for aid, addr in keys:
        by_account.setdefault(aid, []).append(addr)
    for aid, addrs in by_account.items():
        for i in range(0, len(addrs), 900):
            for r in conn.execute(select(address_failures).where(
                    and_(address_failures.c.account_id == aid, address_failures.c.address.in_(addrs[i:i + 900])))):
                rows[(aid, r.address)] = dict(r._mapping)
    touched: dict[tuple[int, str], dict[str, Any]] = {}
    disabled: list[Disabled] = []
    for o in outcomes:
        key = (o.account_id, o.address)
        row = touched.get(key) or rows.get(key)
        if o.delivered and (row is None or row["disabled_at"] is not None or row["consecutive"] == 0):
            continue  # nothing to reset: no row written for the (vast) majority of addresses that never fail
        state = failures.FailureState(row["consecutive"], row["disabled_at"] is not None) if row else \
            failures.FailureState()
        history = list((row or {}).get("history") or [])
        detail: dict[str, Any] | None
        if o.delivered:
            detail, outcome = None, failures.DELIVERED
        else:
            detail, outcome = _judge(o)
            if o.message_id is not None and not state.disabled and any(_is_success_of(h, o.message_id)
                                                                        for h in history):
                # The message a relay accepted (a "success" that reset the count) has bounced after all (DSN):
                # it was no success. Replay the history without it.
                history = [h for h in history if not _is_success_of(h, o.message_id)]
                state = failures.FailureState(_replay(history))
        transition = failures.record_outcome(state, outcome, policy_of(o.account_id).failure_rule)
        history.append(_entry(o, now, detail, outcome.counts_against_recipient))
        new = {"account_id": o.account_id, "address": o.address,
               "consecutive": transition.state.consecutive_failures,
               "disabled_at": now if transition.disable else (row or {}).get("disabled_at"),
               "cause": transition.cause.value if transition.cause else (row or {}).get("cause"),
               "history": history[-HISTORY_LIMIT:], "updated_at": now,
               # In the database already: a row read from it, or one this batch will have inserted before.
               "_exists": row is not None and bool(row.get("_exists", True))}
        touched[key] = new
        if transition.disable:
            assert transition.cause is not None
            disabled.append(Disabled(o.account_id, o.address, transition.cause.value, history[-HISTORY_LIMIT:]))
            ledger.add_suppression(conn, o.account_id, o.channel, o.address, SuppressionReason.DISABLED,
                                   source=f"guardrails:{transition.cause.value}", campaign_id=o.campaign_id,
                                   message_id=o.message_id)
            payload: dict[str, Any] = {"address": o.address, "cause": transition.cause.value,
                                       "disabled_at": now.isoformat(), "history": new["history"]}
            if o.channel is not Channel.EMAIL:
                payload["channel"] = o.channel.value  # e-mail's payload stays as it was (CRM contract)
            webhooks.enqueue(conn, o.account_id, "address.disabled", payload)
    for row in touched.values():
        exists = row.pop("_exists")
        values = {k: v for k, v in row.items() if k not in ("account_id", "address")}
        if exists:
            conn.execute(update(address_failures).where(
                address_failures.c.account_id == row["account_id"], address_failures.c.address == row["address"])
                .values(**values))
        else:
            # Two workers may insert the same address at once: the loser's count is merged into the row.
            res = conn.execute(_ins(conn).values(**row).on_conflict_do_nothing())
            if not res.rowcount:
                conn.execute(update(address_failures).where(
                    address_failures.c.account_id == row["account_id"],
                    address_failures.c.address == row["address"], address_failures.c.disabled_at.is_(None))
                    .values(consecutive=address_failures.c.consecutive + row["consecutive"],
                            updated_at=row["updated_at"]))
    return disabled


def disabled_addresses(conn: Connection, account_id: int, after: str, limit: int) -> list[dict[str, Any]]:
    """Disabled addresses of the account with their history, by address (keyset pagination on `after`)."""
    rows = conn.execute(
        select(address_failures).where(address_failures.c.account_id == account_id,
                                       address_failures.c.disabled_at.is_not(None),
                                       address_failures.c.address > after)
        .order_by(address_failures.c.address).limit(limit))
    return [_view(r) for r in rows]


def histories(conn: Connection, account_id: int, addresses: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    addrs = list(addresses)
    for i in range(0, len(addrs), 900):
        for r in conn.execute(select(address_failures).where(
                address_failures.c.account_id == account_id, address_failures.c.address.in_(addrs[i:i + 900]))):
            out[r.address] = _view(r)
    return out


def _view(r: Any) -> dict[str, Any]:
    disabled_at = as_utc(r.disabled_at)
    return {"address": r.address, "consecutive_failures": r.consecutive, "cause": r.cause,
            "disabled_at": disabled_at.isoformat() if disabled_at else None, "history": r.history or []}


class AddressFailureSink:
    """OutcomeSink: the 3-failure rule on every final e-mail outcome of a dispatch batch."""

    def __init__(self, engine: Engine, policy_of: Callable[[int], GuardrailPolicy]) -> None:
        self.engine = engine
        self.policy_of = policy_of
        self.disabled_total = 0

    async def record(self, batch: Sequence[Recorded]) -> None:
        outcomes = from_recorded(batch)
        if outcomes:
            self.disabled_total += len(await asyncio.to_thread(self._apply, outcomes))

    def _apply(self, outcomes: list[AddressOutcome]) -> list[Disabled]:
        # Resolve policies before the write transaction (they read SQL themselves on a cache miss).
        for aid in {o.account_id for o in outcomes}:
            self.policy_of(aid)
        with self.engine.begin() as conn:
            return apply_outcomes(conn, outcomes, self.policy_of)
