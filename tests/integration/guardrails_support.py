"""Helpers of the guardrails integration tests: a worker whose transport records every hand-off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sender.transport import DeliveryResult, EmailTransport, Envelope
from tests.support.stack import ThreadWorker


@dataclass
class Handoff:
    start: float  # epoch seconds when the batch was handed to the transport
    end: float
    rcpts: list[str]


@dataclass
class RecordingTransport:
    """Wraps the real SMTP transport; records when each batch is handed off and to whom."""

    inner: EmailTransport
    handoffs: list[Handoff] = field(default_factory=list)

    async def deliver(self, batch: Sequence[Envelope]) -> list[DeliveryResult]:
        start = time.time()
        try:
            return await self.inner.deliver(batch)
        finally:
            self.handoffs.append(Handoff(start, time.time(), [e.rcpt_to for e in batch]))

    async def close(self) -> None:
        await self.inner.close()


class RecordingWorker(ThreadWorker):
    """ThreadWorker with a RecordingTransport around the configured SMTP transport."""

    transport: RecordingTransport | None = None

    def make_transport(self, transport: Any) -> Any:
        self.transport = RecordingTransport(transport)
        return self.transport

    def sink(self, kind: type) -> Any:
        return next(s for s in self.worker.dispatcher.sinks if isinstance(s, kind))

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the worker's event loop (its Redis client lives there)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
