"""The dispatcher: claim a batch → check the ledger and the guardrails → render → hand off → record → ack.

One batch at a time per task, several tasks per process so that SMTP, SQL and rendering overlap. Outcomes are
written to the ledger before the queue entries are acknowledged (at-least-once); see `sender.queue` for the
guard that keeps the hand-off at-most-once in the normal case.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from crm import accounts as account_repo
from crm import campaigns as campaign_repo
from crm import ledger
from crm.db import utcnow
from crm.domain import AccountStatus, Channel, ConsentStatus, MessageKind, MessageStatus, SenderProfile
from crm.schema import accounts
from guardrails.consent import account_may_send, gate
from sender.compose import Composer, HeaderInjectionError, PerMessage
from sender.hooks import Action, BodyFilter, HandoffGuard, MessageSigner, OutcomeSink, Recorded, Verdict
from sender.links import Links
from sender.observer import DispatchObserver, NullObserver
from sender.queue import Claimed, DispatchQueue
from sender.render import CompiledTemplate, Rendered, RenderError
from sender.retry import RetryPolicy
from sender.transport import DeliveryResult, EmailTransport, Envelope, Outcome

if TYPE_CHECKING:
    from sender.sms_dispatch import SmsRoad

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    batch_size: int = 200
    concurrency: int = 4  # batches in flight per process
    feedback_id_sender: str = "envoi"
    idle_poll_s: float = 0.05


@dataclass(slots=True)
class _CampaignContext:
    template: CompiledTemplate
    composer: Composer
    sender: SenderProfile


@dataclass(frozen=True, slots=True)
class _Loaded:
    meta: dict[int, dict[str, Any]]
    account_status: dict[int, AccountStatus]
    suppressed: dict[int, set[str]]


class Dispatcher:
    def __init__(self, engine: Engine, queue: DispatchQueue, transport: EmailTransport, links: Links,
                 retry: RetryPolicy, config: DispatchConfig, observer: DispatchObserver | None = None,
                 guards: Sequence[HandoffGuard] = (), sinks: Sequence[OutcomeSink] = (),
                 body_filters: Sequence[BodyFilter] = (), signers: Sequence[MessageSigner] = (),
                 sms: SmsRoad | None = None) -> None:
        self.engine = engine
        self.queue = queue
        self.transport = transport
        self.links = links
        self.retry = retry
        self.config = config
        self.observer = observer or NullObserver()
        self.guards = list(guards)
        self.sinks = list(sinks)
        self.body_filters = list(body_filters)
        self.signers = list(signers)
        self.sms = sms
        self._contexts: dict[int, _CampaignContext] = {}
        self._stopping = asyncio.Event()
        self.in_flight = 0

    def stop(self) -> None:
        """Stop claiming; batches already claimed run to completion (drain)."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._loop(i)) for i in range(self.config.concurrency)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()

    async def _loop(self, index: int) -> None:
        idle = self.config.idle_poll_s
        while not self._stopping.is_set():
            try:
                batch = await self.queue.claim(self.config.batch_size)
            except Exception as exc:  # Redis down or restarting: wait and retry, never die
                log.warning("claim failed: %s", exc)
                await self._pause(1.0)
                continue
            if not batch:
                await self._pause(idle)
                idle = min(idle * 2, 0.5)
                continue
            idle = self.config.idle_poll_s
            await self.process(batch)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def process(self, batch: Sequence[Claimed]) -> None:
        self.in_flight += 1
        try:
            await self._process(batch)
        except Exception:
            # Entries stay pending: another worker (or this one) reclaims them after the idle time.
            log.exception("batch of %d failed; left pending for reclaim", len(batch))
        finally:
            self.in_flight -= 1

    async def _process(self, batch: Sequence[Claimed]) -> None:
        fresh = [c for c in batch if not c.reclaimed]
        reclaimed = [c for c in batch if c.reclaimed]
        ack: list[Claimed] = []
        work: list[Claimed] = []
        sent_before: list[Claimed] = []
        if fresh:
            first = await self.queue.guard_fresh(fresh)
            for c, ok in zip(fresh, first, strict=True):
                (work if ok else ack).append(c)  # a second copy of a message another worker holds
        if reclaimed:
            done = await self.queue.already_done(reclaimed)
            for c, was_sent in zip(reclaimed, done, strict=True):
                (sent_before if was_sent else work).append(c)
        loaded = await asyncio.to_thread(self._load, [c.item.message_id for c in work + sent_before])
        meta = loaded.meta
        outcomes: list[ledger.Outcome] = [
            ledger.Outcome(c.item.message_id, MessageStatus.SENT) for c in sent_before
            if c.item.message_id in meta
        ]
        ack.extend(sent_before)
        envelopes: list[tuple[Claimed, Envelope]] = []
        deferred: list[tuple[Claimed, float]] = []
        now = utcnow()
        # SMS take their own road (sender.sms_dispatch: gate, render, quiet hours, Twilio); their outcomes are
        # recorded and acknowledged below exactly like email's.
        sms_ids = {c.item.message_id for c in work
                   if meta.get(c.item.message_id, {}).get("channel") == Channel.SMS.value}
        if sms_ids and self.sms is not None:
            started = time.perf_counter()
            sms = await self.sms.dispatch([(c, meta[c.item.message_id]) for c in work if c.item.message_id in sms_ids],
                                          loaded.account_status, self.guards, self.retry)
            self.observer.handoff(Channel.SMS.value, time.perf_counter() - started, len(sms_ids))
            work = [c for c in work if c.item.message_id not in sms_ids]
            await self.queue.mark_done(sms.sent)
            outcomes.extend(sms.outcomes)
            ack.extend(sms.ack)
            deferred.extend(sms.deferred)
        for c in work:
            m = meta.get(c.item.message_id)
            if m is None or MessageStatus(m["status"]).is_final:
                ack.append(c)  # cancelled, already sent, or gone (erased)
                continue
            status = loaded.account_status.get(m["account_id"], AccountStatus.ACTIVE)
            if not account_may_send(status):
                outcomes.append(ledger.Outcome(m["id"], MessageStatus.HELD, error=f"account {status.value}"))
                ack.append(c)
                continue
            consent = ConsentStatus(m["email_consent"] or "none") if m["contact_id"] else ConsentStatus.NONE
            decision = gate(MessageKind(m["kind"]), bool(m["recipient"]), consent,
                            m["recipient"] in loaded.suppressed.get(m["account_id"], ()))
            if not decision.allowed:
                assert decision.reason is not None
                outcomes.append(ledger.Outcome(m["id"], MessageStatus.SUPPRESSED, error=decision.reason.value))
                ack.append(c)
                continue
            try:
                envelopes.append((c, await self._envelope(m)))
            except (RenderError, HeaderInjectionError, LookupError) as exc:
                outcomes.append(ledger.Outcome(m["id"], MessageStatus.FAILED, error=f"render: {exc}"))
                ack.append(c)
        if envelopes and self.guards:
            envelopes = await self._guard(envelopes, meta, outcomes, ack, deferred)
        sent_now: list[Claimed] = []
        results_by_id: dict[int, DeliveryResult] = {}
        if envelopes:
            started = time.perf_counter()
            results = await self.transport.deliver([e for _, e in envelopes])
            self.observer.handoff(Channel.EMAIL.value, time.perf_counter() - started, len(envelopes))
            for (c, _), result in zip(envelopes, results, strict=True):
                results_by_id[c.item.message_id] = result
                outcome, due = self._outcome(meta[c.item.message_id], result, now)
                outcomes.append(outcome)
                if outcome.status == MessageStatus.SENT:
                    sent_now.append(c)
                    ack.append(c)
                elif outcome.status == MessageStatus.DEFERRED and due is not None:
                    deferred.append((c, due))
                else:
                    ack.append(c)
            await self.queue.mark_done(sent_now)
        await asyncio.to_thread(self._record, outcomes, meta)
        if self.sinks and outcomes:
            recorded = [Recorded(o, meta[o.message_id], results_by_id.get(o.message_id))
                        for o in outcomes if o.message_id in meta]
            for sink in self.sinks:
                await sink.record(recorded)
        await self.queue.finish(ack, deferred)
        by_channel: dict[str, Counter[str]] = {}
        for o in outcomes:
            channel = meta.get(o.message_id, {}).get("channel", Channel.EMAIL.value)
            by_channel.setdefault(channel, Counter())[o.status.value] += 1
        for channel, counts in by_channel.items():
            self.observer.outcomes(channel, counts)
        for c in sent_now:
            self.observer.queue_to_sent(
                Channel.EMAIL.value, (now - meta[c.item.message_id]["queued_at"]).total_seconds()
            )

    async def _guard(self, envelopes: list[tuple[Claimed, Envelope]], meta: dict[int, dict[str, Any]],
                     outcomes: list[ledger.Outcome], ack: list[Claimed], deferred: list[tuple[Claimed, float]],
                     ) -> list[tuple[Claimed, Envelope]]:
        """The last check before hand-off: a guard's verdict keeps the message from the transport."""
        messages = [meta[c.item.message_id] for c, _ in envelopes]
        verdicts: dict[int, Verdict] = {}
        for guard in self.guards:
            for mid, verdict in (await guard.check(messages)).items():
                verdicts.setdefault(mid, verdict)
        if not verdicts:
            return envelopes
        keep = []
        for c, e in envelopes:
            v = verdicts.get(c.item.message_id)
            if v is None:
                keep.append((c, e))
            elif v.action is Action.HOLD:
                outcomes.append(ledger.Outcome(c.item.message_id, MessageStatus.HELD, error=v.reason))
                ack.append(c)
            elif v.action is Action.SUPPRESS:
                outcomes.append(ledger.Outcome(c.item.message_id, MessageStatus.SUPPRESSED, error=v.reason))
                ack.append(c)
            else:
                due = v.until if v.until is not None else time.time() + self.retry.base_s
                outcomes.append(ledger.Outcome(
                    c.item.message_id, MessageStatus.DEFERRED, error=v.reason, counts_attempt=False,
                    next_attempt_at=datetime.fromtimestamp(due, UTC)))
                deferred.append((c, due))
        return keep

    def _outcome(self, m: dict[str, Any], result: DeliveryResult, now: Any
                 ) -> tuple[ledger.Outcome, float | None]:
        if result.outcome is Outcome.SENT:
            return ledger.Outcome(m["id"], MessageStatus.SENT, code=result.code), None
        if result.outcome is Outcome.TRANSIENT and not self.retry.expired(m["queued_at"], now):
            delay = self.retry.delay(int(m["attempts"]) + 1)
            due = time.time() + delay
            return ledger.Outcome(
                m["id"], MessageStatus.DEFERRED, code=result.code, enhanced=result.enhanced,
                error=result.text, next_attempt_at=now + timedelta(seconds=delay),
            ), due
        error = result.text if result.outcome is Outcome.PERMANENT else f"retries exhausted: {result.text}"
        return ledger.Outcome(m["id"], MessageStatus.FAILED, code=result.code, enhanced=result.enhanced,
                              error=error), None

    # -- SQL (run in a thread) -------------------------------------------------------------------------------

    def _load(self, ids: list[int]) -> _Loaded:
        with self.engine.connect() as conn:
            meta = ledger.load_for_dispatch(conn, ids)
            account_ids = {m["account_id"] for m in meta.values()}
            account_status = {
                aid: AccountStatus(st) for aid, st in conn.execute(
                    select(accounts.c.id, accounts.c.status).where(accounts.c.id.in_(account_ids)))
            } if account_ids else {}
            suppressed: dict[int, set[str]] = {}
            email = [m for m in meta.values() if m["channel"] == Channel.EMAIL.value]  # the SMS road loads its own
            for aid in {m["account_id"] for m in email}:
                addrs = [m["recipient"] for m in email if m["account_id"] == aid]
                suppressed[aid] = set(ledger.suppressed_addresses(conn, aid, Channel.EMAIL, addrs))
            for m in email:
                if m["campaign_id"] and m["campaign_id"] not in self._contexts:
                    self._contexts[m["campaign_id"]] = self._campaign_context(conn, m["campaign_id"])
        return _Loaded(meta, account_status, suppressed)

    def _record(self, outcomes: list[ledger.Outcome], meta: dict[int, dict[str, Any]]) -> None:
        if not outcomes:
            return
        with self.engine.begin() as conn:
            ledger.record_outcomes(conn, outcomes, meta)

    def _campaign_context(self, conn: Any, campaign_id: int) -> _CampaignContext:
        campaign = campaign_repo.get_campaign(conn, None, campaign_id)
        if campaign is None:
            raise LookupError(f"campaign {campaign_id} not found")
        template = campaign_repo.get_template(conn, campaign.account_id, campaign.template_id)
        sender = account_repo.get_sender_profile(conn, campaign.account_id)
        if template is None or sender is None:
            raise LookupError(f"campaign {campaign_id}: template or sender profile missing")
        composer = Composer(
            from_email=campaign.from_email, from_name=campaign.from_name, reply_to=campaign.reply_to,
            sender=sender, kind=campaign.kind,
            feedback_id=f"{campaign.id}:{campaign.account_id}:{campaign.kind.value}:{self.config.feedback_id_sender}",
            list_id=f"<list-{campaign.list_id}.{campaign.account_id}.{self.links.verp.domain}>",
        )
        return _CampaignContext(CompiledTemplate(template.subject, template.html, template.text), composer, sender)

    def _single_context(self, m: dict[str, Any]) -> _CampaignContext:
        p = m["payload"] or {}
        sender = SenderProfile(**p["sender"])
        composer = Composer(
            from_email=p["from_email"], from_name=p.get("from_name", ""), reply_to=p.get("reply_to", ""),
            sender=sender, kind=MessageKind(m["kind"]),
            feedback_id=f"tx:{m['account_id']}:{m['kind']}:{self.config.feedback_id_sender}", list_id=None,
        )
        return _CampaignContext(CompiledTemplate(p["subject"], p.get("html", ""), p.get("text", "")),
                                composer, sender)

    async def _envelope(self, m: dict[str, Any]) -> Envelope:
        ctx = self._contexts[m["campaign_id"]] if m["campaign_id"] else self._single_context(m)
        return_path = self.links.verp.address(m["id"])
        account_id, contact_id, campaign_id = m["account_id"], m["contact_id"] or 0, m["campaign_id"] or 0
        token = self.links.unsubscribe_token(account_id, contact_id, m["id"], campaign_id)
        url = self.links.unsubscribe_url(token)
        context = {
            "contact": {
                "first_name": m["first_name"] or "", "last_name": m["last_name"] or "",
                "email": m["recipient"], "mobile": m["mobile"] or "", "crm_id": m["crm_id"] or "",
                "locale": m["locale"] or "", "attributes": m["attributes"] or {},
            },
            "first_name": m["first_name"] or "", "last_name": m["last_name"] or "", "email": m["recipient"],
            "unsubscribe_url": url,
            "sender": {"legal_name": ctx.sender.legal_name, "postal_address": ctx.sender.postal_address,
                       "phone": ctx.sender.phone},
            "data": (m["payload"] or {}).get("data", {}),
        }
        rendered = ctx.template.render(context)
        for body_filter in self.body_filters:
            rendered = Rendered(rendered.subject, body_filter.html(rendered.html, m), rendered.text)
        data = ctx.composer.compose(rendered, PerMessage(
            message_id=m["id"], to=m["recipient"], return_path=return_path,
            unsubscribe_url=url, unsubscribe_mailto=self.links.unsubscribe_mailto(token),
            ref=self.links.ref(account_id, contact_id, m["id"], campaign_id), locale=m["locale"],
        ))
        for signer in self.signers:
            data = signer.sign(data, m)
        return Envelope(m["id"], return_path, m["recipient"], data)

