"""Extension points of the dispatcher, in the style of dramatiq's middleware: the rules that stop a message at the
last moment (suspension, unsubscribe, quiet hours) and the consumers of outcomes (failure counting, thresholds,
statistics) plug in here without touching the dispatch loop.

`message` mappings are the rows of `crm.ledger.load_for_dispatch` (id, account_id, campaign_id, contact_id,
channel, kind, recipient, recipient_domain, status, attempts, queued_at, contact fields...)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from crm.ledger import Outcome
from sender.transport import DeliveryResult


class Action(StrEnum):
    HOLD = "hold"  # account suspended: keep the message, status `held`, released by reinstatement
    SUPPRESS = "suppress"  # never send (unsubscribed, complained, disabled...)
    DEFER = "defer"  # not now (quiet hours): back on the retry schedule at `until`, no attempt counted


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    until: float | None = None  # epoch seconds, for DEFER


class HandoffGuard(Protocol):
    """Checked on each batch right before it is handed to a transport. Returns verdicts only for the messages
    that must NOT go now; an exception fails the whole batch (it is retried: never send on doubt)."""

    async def check(self, messages: Sequence[Mapping[str, Any]]) -> Mapping[int, Verdict]: ...


@dataclass(frozen=True, slots=True)
class Recorded:
    outcome: Outcome
    message: Mapping[str, Any]
    result: DeliveryResult | None  # the transport's reply, when the message was handed off


class OutcomeSink(Protocol):
    """Told of every outcome once it is in the ledger (before the queue entries are acknowledged)."""

    async def record(self, batch: Sequence[Recorded]) -> None: ...


class BodyFilter(Protocol):
    """Transforms the rendered HTML of one message before MIME assembly (tracking pixel, link rewriting)."""

    def html(self, html: str, message: Mapping[str, Any]) -> str: ...


class MessageSigner(Protocol):
    """Last transformation of the assembled message bytes (DKIM): returns the bytes to hand off."""

    def sign(self, data: bytes, message: Mapping[str, Any]) -> bytes: ...
