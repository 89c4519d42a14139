"""The worker process: dispatcher, fan-out, retry schedule, reclaim of dead consumers, reconciliation.

Shutdown order (STYLE 9): stop claiming, drain in-flight batches until a deadline, leave the rest queued
(unacknowledged entries are reclaimed by the next worker), close pools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import uuid
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from crm import campaigns as campaign_repo
from crm import keys, ledger
from envoi.composition import DispatchHooks, address_hasher, dispatch_hooks
from envoi.metrics import QUEUE_DEPTH, QUEUE_PENDING, PrometheusObserver
from envoi.settings import Settings
from sender.dispatcher import DispatchConfig, Dispatcher
from sender.fanout import run_fanout
from sender.links import Links
from sender.queue import DispatchQueue
from sender.reconcile import ensure_epoch
from sender.retry import RetryPolicy
from sender.smtp_replies import SmtpRelayConfig
from sender.transport import EmailTransport

log = logging.getLogger(__name__)


def build_transport(settings: Settings) -> EmailTransport:
    if settings.delivery_mode == "direct":  # straight to each domain's MX, shaped per destination (issue 7)
        from envoi.delivery import direct_transport

        return direct_transport(settings)
    s = settings.smtp
    config = SmtpRelayConfig(
        host=s.host, port=s.port, starttls=s.starttls, implicit_tls=s.implicit_tls,  # type: ignore[arg-type]
        username=s.username or None, password=s.password or None, timeout_s=s.timeout_s,
        max_connections=s.max_connections, max_messages_per_connection=s.max_messages_per_connection,
        helo_name=s.helo_name,
    )
    if s.pipelining:  # our RFC 2920 client; it falls back to lock-step when the relay lacks PIPELINING
        from sender.smtp_pipelined import PipelinedSmtpTransport

        return PipelinedSmtpTransport(config)
    from sender.smtp_pool import SmtpPool  # aiosmtplib, for relays where the fast path is not wanted

    return SmtpPool(config)


class Worker:
    def __init__(self, settings: Settings, engine: Engine, redis: Redis, transport: EmailTransport,
                 consumer: str | None = None, hooks: DispatchHooks | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.redis = redis
        self.transport = transport
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.queue = DispatchQueue(redis, settings.partitions, self.consumer)
        self.links = Links(settings.signing_keys, settings.public_url, settings.bounce_domain,
                           settings.unsubscribe_mailbox)
        hooks = hooks or dispatch_hooks(settings, engine, redis)
        self.chores = hooks.chores
        self.sms = hooks.sms
        self.dispatcher = Dispatcher(
            engine, self.queue, transport, self.links,
            RetryPolicy(settings.retry_base_s, settings.retry_cap_s, settings.retry_max_age_s),
            DispatchConfig(batch_size=settings.batch_size, feedback_id_sender=settings.feedback_id_sender),
            PrometheusObserver(), guards=hooks.guards, sinks=hooks.sinks, body_filters=hooks.body_filters,
            signers=hooks.signers, sms=hooks.sms,
        )
        self._stop = asyncio.Event()
        self._fanouts: dict[int, asyncio.Task[None]] = {}

    def stop(self) -> None:
        self._stop.set()
        self.dispatcher.stop()

    async def run(self) -> None:
        await self._retrying(self._start)
        background = [
            asyncio.create_task(self._every(0.5, self._move_due)),
            asyncio.create_task(self._every(max(0.5, self.settings.reclaim_idle_s / 2), self._reclaim)),
            asyncio.create_task(self._every(1.0, self._watch_epoch)),
            asyncio.create_task(self._every(0.5, self._start_fanouts)),
            asyncio.create_task(self._every(1.0, self._complete_campaigns)),
            asyncio.create_task(self._every(2.0, self._gauges)),
            *(asyncio.create_task(self._every(period, chore)) for period, chore in self.chores),
        ]
        try:
            await self.dispatcher.run()
        finally:
            for t in background + list(self._fanouts.values()):
                t.cancel()
            await asyncio.gather(*background, *self._fanouts.values(), return_exceptions=True)
            await self.transport.close()
            if self.sms is not None:
                await self.sms.close()

    async def drain(self, deadline_s: float) -> None:
        """Stop claiming and wait for in-flight batches, at most `deadline_s`."""
        self.stop()
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline_s
        while self.dispatcher.in_flight and loop.time() < end:
            await asyncio.sleep(0.05)

    async def _start(self) -> None:
        await self.queue.ensure_groups()
        await ensure_epoch(self.engine, self.queue)

    async def _retrying(self, fn: Callable[[], Awaitable[None]]) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                await fn()
                return
            except Exception as exc:
                log.warning("start-up step failed (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)

    async def _every(self, seconds: float, fn: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            try:
                await fn()
            except Exception as exc:  # a background chore must never kill the worker
                log.warning("%s failed: %s", getattr(fn, "__name__", fn), exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), seconds)

    async def _move_due(self) -> None:
        await self.queue.move_due()

    async def _reclaim(self) -> None:
        while not self._stop.is_set():
            batch = await self.queue.reclaim(self.settings.reclaim_idle_s, count=self.settings.batch_size)
            if not batch:
                return
            log.info("reclaimed %d entries from dead consumers", len(batch))
            await self.dispatcher.process(batch)

    async def _watch_epoch(self) -> None:
        await self.queue.ensure_groups() if not await self.redis.exists(keys.epoch()) else None
        await ensure_epoch(self.engine, self.queue)

    async def _start_fanouts(self) -> None:
        ids = await asyncio.to_thread(self._fanning_out)
        for cid in ids:
            task = self._fanouts.get(cid)
            if task is not None and not task.done():
                continue
            token = uuid.uuid4().hex
            if not await self.redis.set(keys.fanout_lock(cid), token, nx=True, px=30_000):
                continue  # another worker fans this campaign out

            async def refresh(cid: int = cid) -> None:
                await self.redis.pexpire(keys.fanout_lock(cid), 30_000)

            async def fan(cid: int = cid, token: str = token) -> None:
                try:
                    await run_fanout(self.engine, self.queue, cid, self.settings.fanout_batch_size, refresh,
                                     hasher=address_hasher(self.settings))
                finally:
                    if (await self.redis.get(keys.fanout_lock(cid))) in (token, token.encode()):
                        await self.redis.delete(keys.fanout_lock(cid))

            self._fanouts[cid] = asyncio.create_task(fan())

    def _fanning_out(self) -> list[int]:
        with self.engine.connect() as conn:
            return campaign_repo.campaigns_fanning_out(conn)

    async def _complete_campaigns(self) -> None:
        def complete() -> list[int]:
            with self.engine.begin() as conn:
                return ledger.complete_finished_campaigns(conn)

        done = await asyncio.to_thread(complete)
        for cid in done:
            log.info("campaign %s completed", cid)

    async def _gauges(self) -> None:
        depth = await self.queue.depth()
        for name, value in depth.items():
            QUEUE_DEPTH.labels(name).set(value)
        QUEUE_PENDING.set(await self.queue.pending_count())


def install_signal_handlers(worker: Worker, deadline_s: float) -> None:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        log.info("shutting down: draining in-flight sends (deadline %.0fs)", deadline_s)
        worker.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
