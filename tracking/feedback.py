"""Recording asynchronous feedback (DSNs, ARF complaints, provider notifications) on the right message.

Finding the message, cheapest exact signal first (flufl.bounce's lesson, STANDARDS §2):
1. the VERP return-path the report was sent to — signed, so a forged DSN cannot touch someone else's address;
2. our signed `X-Envoi-Ref` header in the returned original;
3. our `Message-ID` (`<id.random@domain>`) in the returned original — not signed, so it is only trusted when
   the report's recipient is the message's recipient (ISPs redact ARF recipients: then 1 or 2 must match).

Then, in one transaction: a `bounced` / `complained` event on the message (campaign, contact and recipient
domain), at most once per message and type (a report delivered twice is counted once); a complaint suppresses
the address for the account at once (reason `complained`); a failure is handed to the 3-failure rule through
the `FailureFeed` port (the guardrails slice owns that rule's state). Counters follow in Redis.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import insert, select
from sqlalchemy.engine import Connection, Engine

from crm import ledger
from crm.db import utcnow
from crm.domain import Channel, EventType, SuppressionReason
from crm.schema import events, messages
from tracking import counters
from tracking.bounces.result import BounceKind, BounceResult
from tracking.counters import Metric
from tracking.metrics import FEEDBACK
from tracking.verp import Verp
from unsubscribe.tokens import PURPOSE_REF, LinkSigner, TokenError

log = logging.getLogger(__name__)

_OUR_MESSAGE_ID = re.compile(r"<(\d{1,19})\.[0-9a-f]{4,32}@[^<>\s]+>")


class MatchedBy(StrEnum):
    VERP = "verp"
    REF = "ref"
    MESSAGE_ID = "message_id"


@dataclass(frozen=True, slots=True)
class FinalFailure:
    """An asynchronous final failure of one address, for the 3-failure rule (same fields as an SMTP reply)."""

    account_id: int
    address: str
    code: int | None
    enhanced: str | None
    text: str
    message_id: int
    campaign_id: int | None


class FailureFeed(Protocol):
    """The 3-failure rule's entry for asynchronous failures; called inside the recording transaction."""

    def __call__(self, conn: Connection, failures: Sequence[FinalFailure]) -> None: ...


@dataclass(frozen=True, slots=True)
class Recorded:
    """What happened to one report: `message_id` None means no message of ours could be trusted."""

    kind: BounceKind
    message_id: int | None
    matched_by: MatchedBy | None
    duplicate: bool = False
    suppressed: bool = False


class FeedbackRecorder:
    def __init__(self, engine: Engine, redis: Redis | None, signing_keys: Sequence[str], bounce_domain: str,
                 failure_feed: FailureFeed | None = None,
                 on_suppressed: Callable[[int, str], None] | None = None) -> None:
        self.engine = engine
        self.redis = redis
        self.verp = Verp(signing_keys, bounce_domain)
        self.signer = LinkSigner(signing_keys)
        self.failure_feed = failure_feed
        self.on_suppressed = on_suppressed

    def find(self, conn: Connection, result: BounceResult) -> tuple[dict[str, Any] | None, MatchedBy | None]:
        hints = result.correlation
        if hints.verp_local:
            mid = self.verp.decode(hints.verp_local)
            if mid is not None:
                m = _message(conn, mid)
                if m is not None:
                    return m, MatchedBy.VERP
        if hints.envoi_ref:
            try:
                claims = self.signer.verify(hints.envoi_ref.strip(), PURPOSE_REF)
            except (TokenError, ValueError):
                claims = None
            if claims is not None:
                m = _message(conn, claims.message_id)
                if m is not None and m["account_id"] == claims.account_id:
                    return m, MatchedBy.REF
        if hints.message_id and result.recipient:
            found = _OUR_MESSAGE_ID.search(hints.message_id)
            if found:
                m = _message(conn, int(found[1]))
                if m is not None and str(m["recipient"]).lower() == result.recipient.lower():
                    return m, MatchedBy.MESSAGE_ID
        return None, None

    async def record(self, result: BounceResult, source: str) -> Recorded:
        recorded, metric, message = await asyncio.to_thread(self._record_sql, result, source)
        FEEDBACK.labels(source, result.kind.value, "yes" if recorded.message_id else "no").inc()
        if metric is not None and message is not None and message["campaign_id"] and self.redis is not None:
            try:
                await counters.add(self.redis, message["campaign_id"], message["recipient_domain"], metric)
            except Exception as exc:  # the event is in SQL; reconciliation repairs the counters
                log.warning("feedback counters not updated: %s", exc)
        if recorded.suppressed and message is not None and self.on_suppressed is not None:
            self.on_suppressed(message["account_id"], str(message["recipient"]).lower())
        return recorded

    def _record_sql(self, result: BounceResult, source: str
                    ) -> tuple[Recorded, Metric | None, dict[str, Any] | None]:
        if result.kind not in (BounceKind.HARD, BounceKind.SOFT, BounceKind.COMPLAINT):
            return Recorded(result.kind, None, None), None, None
        with self.engine.begin() as conn:
            m, how = self.find(conn, result)
            if m is None:
                return Recorded(result.kind, None, None), None, None
            complaint = result.kind is BounceKind.COMPLAINT
            event = EventType.COMPLAINED if complaint else EventType.BOUNCED
            seen = conn.execute(select(events.c.id).where(events.c.message_id == m["id"], events.c.type == event.value)
                                .limit(1)).first()
            if seen is not None:
                return Recorded(result.kind, m["id"], how, duplicate=True), None, None
            conn.execute(insert(events).values(
                account_id=m["account_id"], message_id=m["id"], campaign_id=m["campaign_id"],
                contact_id=m["contact_id"], type=event.value, recipient_domain=m["recipient_domain"],
                data={"kind": result.kind.value, "status": result.status, "reason": result.reason,
                      "source": source, "matched_by": how.value if how else None,
                      "diagnostic": (result.diagnostic or "")[:500] or None},
                created_at=utcnow()))
            address = str(m["recipient"]).lower()
            suppressed = False
            if complaint:
                # Contract and STANDARDS §2 (RFC 5965): a complaint stops all mail to the address at once.
                suppressed = ledger.add_suppression(conn, m["account_id"], Channel.EMAIL, address,
                                                    SuppressionReason.COMPLAINED, source=f"feedback:{source}",
                                                    campaign_id=m["campaign_id"], message_id=m["id"])
                metric = Metric.COMPLAINTS
            else:
                metric = Metric.BOUNCED_HARD if result.kind is BounceKind.HARD else Metric.BOUNCED_SOFT
                if self.failure_feed is not None:
                    self.failure_feed(conn, [FinalFailure(
                        m["account_id"], address, _basic_code(result), result.status,
                        f"{result.reason} {result.diagnostic or ''}".strip(), m["id"], m["campaign_id"])])
        return Recorded(result.kind, m["id"], how, suppressed=suppressed), metric, m


def _basic_code(result: BounceResult) -> int | None:
    """A DSN's status class stands for the reply code the 3-failure rule expects (5.x.x → 550, 4.x.x → 450)."""
    if result.status and result.status[0] in "45":
        return 550 if result.status[0] == "5" else 450
    return 550 if result.kind is BounceKind.HARD else None


def _message(conn: Connection, message_id: int) -> dict[str, Any] | None:
    row = conn.execute(select(
        messages.c.id, messages.c.account_id, messages.c.campaign_id, messages.c.contact_id, messages.c.recipient,
        messages.c.recipient_domain, messages.c.channel).where(messages.c.id == message_id)).first()
    if row is None or row.channel != Channel.EMAIL.value:
        return None
    return dict(row._mapping)
