"""The SMS road of the dispatcher: gate → render → quiet hours → guards → Twilio (or the capture file) → outcomes.

`Dispatcher._process` splits the SMS of a claimed batch off right after loading them from the ledger and hands
them to `SmsRoad.dispatch`, which returns ledger outcomes, the entries to acknowledge and those to put back on the
retry schedule; the dispatcher records and acknowledges them exactly as it does for email (ledger first, then
XACK: at-least-once, see docs/architecture.md).

- Gate: `sms_consent` of the contact and the account's SMS suppressions (fan-out checked them too; a STOP that
  arrived since must still win).
- Body: the campaign template's `text` (or the single send's body) rendered in the Jinja2 sandbox; a marketing
  SMS gets the sender's name and the opt-out mention (`compose_marketing_sms`, contract Annex 1 obligations 1
  and 4); the body is checked against the account's segment limit.
- Quiet hours (STANDARDS.md §5): a marketing SMS outside the account's window is DEFERRED to the next allowed
  slot without counting an attempt (`counts_attempt=False`): held, never dropped. Transactional SMS are exempt.
- Shaping: with `tokens` (a Redis token bucket per sender, `sender.shaper`), the rate per number / Messaging
  Service holds across every worker process: what the bucket does not grant now is deferred to its slot without
  an attempt; the local budget below still keeps each batch short.
- Results: Twilio's 429 and queue overflow (21611, 30001) are transient (retry schedule); 21610 fails the
  message and suppresses the number; other 4xx fail it (they count as delivery failures downstream).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine

from crm import accounts as account_repo
from crm import campaigns as campaign_repo
from crm import ledger
from crm import sms as sms_repo
from crm.domain import AccountStatus, Channel, ConsentStatus, MessageKind, MessageStatus, SuppressionReason
from guardrails.consent import account_may_send, gate
from guardrails.sms_window import release_at
from sender.hooks import Action, HandoffGuard, Verdict
from sender.queue import Claimed
from sender.render import CompiledTemplate, RenderError
from sender.retry import RetryPolicy
from sender.sms_config import SmsAccountConfig, SmsConfigError, SmsPlatform, account_sms_config
from sender.sms_encoding import SmsBodyError, analyse_sms, check_sms_body, compose_marketing_sms
from sender.sms_transport import Outcome, SmsEnvelope, SmsResult, SmsTransport
from sender.twilio_errors import UNSUBSCRIBED

log = logging.getLogger(__name__)

# (sender rate key, messages wanted now, rate per second) -> messages granted now, for all workers together.
SendTokens = Callable[[str, int, float], Awaitable[int]]


@dataclass(slots=True)
class SmsBatchOutcome:
    outcomes: list[ledger.Outcome] = field(default_factory=list)
    ack: list[Claimed] = field(default_factory=list)
    deferred: list[tuple[Claimed, float]] = field(default_factory=list)  # (entry, due epoch s)
    sent: list[Claimed] = field(default_factory=list)  # accepted by the gateway: mark them done


@dataclass(frozen=True, slots=True)
class _Context:
    template: CompiledTemplate
    config: SmsAccountConfig
    sender: dict[str, str]


class SmsRoad:
    """Also a `HandoffGuard`: registered among the dispatcher's guards (`envoi.composition.dispatch_hooks`), it
    keeps any SMS that reached the email road away from SMTP, and the dispatcher finds it there."""

    def __init__(self, engine: Engine, transport: SmsTransport, platform: SmsPlatform, *,
                 status_callback: str | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rate_for: Callable[[str], float] | None = None, send_budget_s: float = 5.0,
                 tokens: SendTokens | None = None) -> None:
        self.engine = engine
        self.transport = transport
        self.platform = platform
        self.status_callback = status_callback  # may hold "{message_id}"
        self.clock = clock
        # Per-sender shaping (messages/s per number or Messaging Service; None: unshaped, e.g. the capture file).
        # A batch hands each sender at most `send_budget_s` worth of messages; the rest go back on the retry
        # schedule at their slot. Why: the transport paces by waiting, and a batch that waits longer than the
        # queue's reclaim idle time would be reclaimed and sent twice (sender.queue).
        self.rate_for = rate_for
        self.send_budget_s = send_budget_s
        self.tokens = tokens  # global shaping (Redis); None: per process only
        self._next_free: dict[str, float] = {}  # per sender: epoch s when its next start is free
        self._contexts: dict[int, _Context] = {}

    async def check(self, messages: Sequence[Mapping[str, Any]]) -> Mapping[int, Verdict]:
        return {m["id"]: Verdict(Action.DEFER, "sms on the email road")
                for m in messages if m["channel"] == Channel.SMS.value}

    async def close(self) -> None:
        await self.transport.close()

    async def dispatch(self, work: Sequence[tuple[Claimed, dict[str, Any]]],
                       account_status: Mapping[int, AccountStatus], guards: Sequence[HandoffGuard],
                       retry: RetryPolicy) -> SmsBatchOutcome:
        out = SmsBatchOutcome()
        if not work:
            return out
        suppressed, contexts = await asyncio.to_thread(self._load, [m for _, m in work])
        now = self.clock()
        ready: list[tuple[Claimed, dict[str, Any], SmsEnvelope]] = []
        for c, m in work:
            if MessageStatus(m["status"]).is_final:
                out.ack.append(c)
                continue
            status = account_status.get(m["account_id"], AccountStatus.ACTIVE)
            if not account_may_send(status):
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.HELD, error=f"account {status.value}"))
                out.ack.append(c)
                continue
            consent = ConsentStatus(m["sms_consent"] or "none") if m["contact_id"] else ConsentStatus.NONE
            kind = MessageKind(m["kind"])
            decision = gate(kind, bool(m["recipient"]), consent, m["recipient"] in suppressed.get(m["account_id"], ()))
            if not decision.allowed:
                assert decision.reason is not None
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.SUPPRESSED, error=decision.reason.value))
                out.ack.append(c)
                continue
            ctx = contexts.get(m["campaign_id"] or -m["id"])
            try:
                if ctx is None or isinstance(ctx, Exception):
                    raise ctx or LookupError("no sms context")
                body = self._body(ctx, m, kind)
            except (RenderError, SmsBodyError, SmsConfigError, LookupError, ValueError) as exc:
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.FAILED, error=f"render: {exc}"))
                out.ack.append(c)
                continue
            release = release_at(kind, now, ctx.config.window)
            if release is not None:
                # Quiet hours: held until the next allowed slot, not an attempt. The due time keeps the gap on
                # the real clock so that an injected clock (tests) and the retry schedule agree.
                due = time.time() + max(0.0, (release - now).total_seconds())
                out.outcomes.append(ledger.Outcome(
                    m["id"], MessageStatus.DEFERRED, error=f"quiet hours until {release.isoformat()}",
                    counts_attempt=False, next_attempt_at=release.astimezone(UTC)))
                out.deferred.append((c, due))
                continue
            assert ctx.config.sender is not None
            callback = self.status_callback.replace("{message_id}", str(m["id"])) if self.status_callback else None
            ready.append((c, m, SmsEnvelope(m["id"], m["recipient"], body, ctx.config.sender, callback)))
        if ready and guards:
            ready = await self._guard(ready, guards, out, retry)
        if ready and self.rate_for is not None and self.tokens is not None:
            ready = await self._take_tokens(ready, out)
        if ready and self.rate_for is not None:
            ready = self._shape(ready, out)
        if ready:
            results = await self.transport.send([e for _, _, e in ready])
            await self._results(ready, results, out, retry)
        return out

    # -- steps ------------------------------------------------------------------------------------------------

    def _body(self, ctx: _Context, m: dict[str, Any], kind: MessageKind) -> str:
        context = {
            "contact": {"first_name": m["first_name"] or "", "last_name": m["last_name"] or "",
                        "email": m["email"] or "", "mobile": m["recipient"], "crm_id": m["crm_id"] or "",
                        "locale": m["locale"] or "", "attributes": m["attributes"] or {}},
            "first_name": m["first_name"] or "", "last_name": m["last_name"] or "", "mobile": m["recipient"],
            "sender": ctx.sender, "data": (m["payload"] or {}).get("data", {}),
        }
        body = ctx.template.render(context).text.strip()
        if kind is MessageKind.MARKETING:
            missing = ctx.config.missing()
            if missing:
                raise SmsConfigError(missing[0], f"sms settings incomplete: {', '.join(missing)}")
            body = compose_marketing_sms(body, ctx.config.sender_name, ctx.config.opt_out_mention)
        elif ctx.config.sender is None:
            raise SmsConfigError("sms.from", "sms settings incomplete: sms.from")
        check_sms_body(body, ctx.config.max_segments)
        return body

    async def _guard(self, ready: list[tuple[Claimed, dict[str, Any], SmsEnvelope]], guards: Sequence[HandoffGuard],
                     out: SmsBatchOutcome, retry: RetryPolicy) -> list[tuple[Claimed, dict[str, Any], SmsEnvelope]]:
        """The other slices' last-moment guards (suspension, unsubscribe...), as the email road applies them."""
        verdicts: dict[int, Verdict] = {}
        for g in guards:
            if g is self:
                continue
            for mid, v in (await g.check([m for _, m, _ in ready])).items():
                verdicts.setdefault(mid, v)
        keep: list[tuple[Claimed, dict[str, Any], SmsEnvelope]] = []
        for c, m, e in ready:
            verdict = verdicts.get(m["id"])
            if verdict is None:
                keep.append((c, m, e))
                continue
            v = verdict
            if v.action is Action.DEFER:
                due = v.until if v.until is not None else time.time() + retry.base_s
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.DEFERRED, error=v.reason,
                                                   counts_attempt=False,
                                                   next_attempt_at=datetime.fromtimestamp(due, UTC)))
                out.deferred.append((c, due))
            else:
                status = MessageStatus.HELD if v.action is Action.HOLD else MessageStatus.SUPPRESSED
                out.outcomes.append(ledger.Outcome(m["id"], status, error=v.reason))
                out.ack.append(c)
        return keep

    async def _take_tokens(self, ready: list[tuple[Claimed, dict[str, Any], SmsEnvelope]], out: SmsBatchOutcome
                           ) -> list[tuple[Claimed, dict[str, Any], SmsEnvelope]]:
        """Keep what the shared bucket of each sender grants now; defer the rest, spread over the next slots."""
        assert self.rate_for is not None and self.tokens is not None
        groups: dict[str, list[tuple[Claimed, dict[str, Any], SmsEnvelope]]] = {}
        for item in ready:
            groups.setdefault(item[2].sender.rate_key, []).append(item)
        keep: list[tuple[Claimed, dict[str, Any], SmsEnvelope]] = []
        now = time.time()
        for key, group in groups.items():
            rate = self.rate_for(key)
            try:
                granted = await self.tokens(key, len(group), rate)
            except Exception as exc:  # Redis unreachable: the per-process pace still applies
                log.warning("sms shaping: shared bucket unavailable (%s); pacing per process", exc)
                granted = len(group)
            keep.extend(group[:granted])
            for j, (c, m, _) in enumerate(group[granted:]):
                due = now + (j + 1) / rate
                out.outcomes.append(ledger.Outcome(
                    m["id"], MessageStatus.DEFERRED, error=f"sms shaping: {rate:g}/s for sender {key} (all workers)",
                    counts_attempt=False, next_attempt_at=datetime.fromtimestamp(due, UTC)))
                out.deferred.append((c, due))
        return keep

    def _shape(self, ready: list[tuple[Claimed, dict[str, Any], SmsEnvelope]], out: SmsBatchOutcome
               ) -> list[tuple[Claimed, dict[str, Any], SmsEnvelope]]:
        """Keep what each sender may start within the send budget; defer the rest to its slot (no attempt)."""
        assert self.rate_for is not None
        now = time.time()
        keep: list[tuple[Claimed, dict[str, Any], SmsEnvelope]] = []
        backlog: dict[str, int] = {}
        for c, m, e in ready:
            key = e.sender.rate_key
            rate = self.rate_for(key)
            start = max(now, self._next_free.get(key, now))
            if start - now <= self.send_budget_s:
                self._next_free[key] = start + 1.0 / rate
                keep.append((c, m, e))
                continue
            due = start + backlog.get(key, 0) / rate  # not reserved: it competes again when it comes back
            backlog[key] = backlog.get(key, 0) + 1
            out.outcomes.append(ledger.Outcome(
                m["id"], MessageStatus.DEFERRED, error=f"sms shaping: {rate:g}/s for sender {key}",
                counts_attempt=False, next_attempt_at=datetime.fromtimestamp(due, UTC)))
            out.deferred.append((c, due))
        return keep

    async def _results(self, ready: list[tuple[Claimed, dict[str, Any], SmsEnvelope]], results: list[SmsResult],
                       out: SmsBatchOutcome, retry: RetryPolicy) -> None:
        handoffs: list[sms_repo.Handoff] = []
        unsubscribed: list[dict[str, Any]] = []
        now = datetime.now(UTC)
        for (c, m, e), r in zip(ready, results, strict=True):
            code = r.error_code or r.http_status
            if r.outcome is Outcome.SENT:
                report = analyse_sms(e.body)
                handoffs.append(sms_repo.Handoff(m["id"], m["account_id"], r.sid, report.encoding.value,
                                                 report.segments, r.text or "queued"))
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.SENT))
                out.sent.append(c)
                out.ack.append(c)
            # A first attempt is never "expired": a marketing SMS may have been held for a long weekend first.
            elif r.outcome is Outcome.TRANSIENT and not (int(m["attempts"]) and retry.expired(m["queued_at"], now)):
                delay = retry.delay(int(m["attempts"]) + 1)
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.DEFERRED, code=code,
                                                   error=f"twilio: {r.text}",
                                                   next_attempt_at=now + timedelta(seconds=delay)))
                out.deferred.append((c, time.time() + delay))
            else:
                prefix = "twilio" if r.outcome is Outcome.PERMANENT else "retries exhausted: twilio"
                out.outcomes.append(ledger.Outcome(m["id"], MessageStatus.FAILED, code=code,
                                                   error=f"{prefix}: {r.text}"))
                out.ack.append(c)
                if r.error_code == UNSUBSCRIBED:
                    unsubscribed.append(m)
        if handoffs or unsubscribed:
            await asyncio.to_thread(self._after_send, handoffs, unsubscribed)

    # -- SQL (threads) ------------------------------------------------------------------------------------------

    def _after_send(self, handoffs: list[sms_repo.Handoff], unsubscribed: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            sms_repo.record_handoffs(conn, handoffs)
            for m in unsubscribed:
                # 21610: the recipient replied STOP at the carrier; suppress here too so that no later campaign
                # of the account tries again (STANDARDS.md §6).
                ledger.add_suppression(conn, m["account_id"], Channel.SMS, m["recipient"],
                                       SuppressionReason.UNSUBSCRIBED, "twilio:21610",
                                       campaign_id=m["campaign_id"], message_id=m["id"])

    def _load(self, batch: list[dict[str, Any]]) -> tuple[dict[int, set[str]], dict[int, _Context | Exception]]:
        contexts: dict[int, _Context | Exception] = {}
        with self.engine.connect() as conn:
            suppressed: dict[int, set[str]] = {}
            for aid in {m["account_id"] for m in batch}:
                numbers = [m["recipient"] for m in batch if m["account_id"] == aid]
                suppressed[aid] = set(ledger.suppressed_addresses(conn, aid, Channel.SMS, numbers))
            for m in batch:
                key = m["campaign_id"] or -m["id"]
                if m["campaign_id"] and m["campaign_id"] in self._contexts:
                    contexts[key] = self._contexts[m["campaign_id"]]
                    continue
                try:
                    contexts[key] = ctx = self._context(conn, m)
                except (LookupError, SmsConfigError, RenderError) as exc:
                    contexts[key] = exc
                    continue
                if m["campaign_id"]:
                    self._contexts[m["campaign_id"]] = ctx
        return suppressed, contexts

    def _context(self, conn: Any, m: dict[str, Any]) -> _Context:
        account_id = m["account_id"]
        if m["campaign_id"]:
            campaign = campaign_repo.get_campaign(conn, account_id, m["campaign_id"])
            template = campaign_repo.get_template(conn, account_id, campaign.template_id) if campaign else None
            if template is None:
                raise LookupError(f"campaign {m['campaign_id']}: template missing")
            text = template.text
        else:
            text = str((m["payload"] or {}).get("text", ""))
        profile = account_repo.get_sender_profile(conn, account_id)
        config = account_sms_config(sms_repo.get_sms_settings(conn, account_id), profile, self.platform)
        sender = {"legal_name": profile.legal_name if profile else "", "name": config.sender_name,
                  "postal_address": profile.postal_address if profile else "",
                  "phone": profile.phone if profile else ""}
        return _Context(CompiledTemplate("", "", text), config, sender)
