"""A bounded set of persistent SMTP sessions and the scheduling of one batch over them.

Shared by both SMTP transports; knows nothing of SMTP itself. There are exactly `max_connections` slots,
each holding at most one open session, so the number of connections to the relay is bounded however
many `deliver` calls run at once. A batch is spread over up to `max_connections` workers: each takes a
slot (the most recently used first, so warm connections are reused), opens a session when the slot is
empty, broken or used up (messages per connection), and pulls envelopes from the batch until none is left.

A session that cannot be opened retires its worker without charging any envelope; when every worker has
retired, what is left of the batch fails as TRANSIENT with the last set-up error (a relay that is down
costs one timeout per connection, not one per envelope).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from sender.smtp_replies import SmtpSetupError, transient
from sender.transport import DeliveryResult, Envelope


class SmtpSession(Protocol):
    @property
    def usable(self) -> bool:
        """Connected, not broken, and under the messages-per-connection limit."""
        ...

    async def send(self, envelope: Envelope) -> DeliveryResult:
        """One transaction; never raises for a network or SMTP error (it marks itself broken instead)."""
        ...

    async def send_many(self, envelopes: Sequence[Envelope]) -> list[DeliveryResult]:
        """Several transactions in a row (pipelined when it can); same contract as send.

        May return fewer results than envelopes — never none: the envelopes after the last result were
        not attempted (no reply to their MAIL FROM was read before the connection failed), so they go
        back to the batch for another connection, which cannot duplicate a message.
        """
        ...

    @property
    def room(self) -> int:
        """How many more transactions this session may carry before it must be replaced."""
        ...

    async def close(self) -> None:
        """QUIT politely (bounded by the timeout), then close; never raises."""
        ...

    def abort(self) -> None:
        """Close the socket now, without QUIT (cancellation)."""
        ...


class _Slot:
    __slots__ = ("session",)

    def __init__(self) -> None:
        self.session: SmtpSession | None = None


class SessionSlots:
    def __init__(
        self,
        max_connections: int,
        open_session: Callable[[], Awaitable[SmtpSession]],
        *,
        chunk: int = 1,
    ) -> None:
        self._open = open_session
        self._max = max_connections
        # How many envelopes a worker takes at once: 1 for lock-step, more for a pipelining session.
        self._chunk = chunk
        self._idle: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for _ in range(max_connections):
            self._idle.put_nowait(_Slot())
        self._closed = False

    async def deliver(self, batch: Sequence[Envelope]) -> list[DeliveryResult]:
        if self._closed:
            raise RuntimeError("the SMTP transport is closed")
        n = len(batch)
        results: list[DeliveryResult | None] = [None] * n
        pending: deque[int] = deque(range(n))
        setup_errors: list[SmtpSetupError] = []
        # Small batches are spread over every connection rather than queued behind one.
        chunk = max(1, min(self._chunk, -(-n // self._max)))

        async def worker() -> None:
            slot = await self._idle.get()
            try:
                while pending:
                    session = slot.session
                    if session is None or not session.usable:
                        slot.session = None
                        if session is not None:
                            await session.close()
                        try:
                            session = slot.session = await self._open()
                        except SmtpSetupError as exc:
                            setup_errors.append(exc)
                            return
                    take = min(chunk, session.room, len(pending))  # others may have emptied it meanwhile
                    if take == 0:
                        break
                    if take == 1:
                        i = pending.popleft()
                        results[i] = await session.send(batch[i])
                    else:
                        idx = [pending.popleft() for _ in range(take)]
                        answered = await session.send_many([batch[i] for i in idx])
                        if not answered:  # the contract above: without it a broken relay would loop forever
                            raise RuntimeError("SmtpSession.send_many returned no result")
                        for i, r in zip(idx, answered, strict=False):
                            results[i] = r
                        pending.extendleft(reversed(idx[len(answered) :]))
            except BaseException:
                # Cancelled mid-transaction: the session's state is unknown, so it cannot be reused.
                if slot.session is not None:
                    slot.session.abort()
                    slot.session = None
                raise
            finally:
                self._idle.put_nowait(slot)

        if n:
            async with asyncio.TaskGroup() as tg:
                for _ in range(min(self._max, -(-n // chunk))):
                    tg.create_task(worker())
        if pending:
            err = setup_errors[-1] if setup_errors else SmtpSetupError("no connection could be opened")
            for i in pending:
                results[i] = transient(batch[i].message_id, err.text, err.code)
        done = [r for r in results if r is not None]
        if len(done) != n:  # every index is either popped and answered or still pending: a bug otherwise
            raise RuntimeError("SMTP batch scheduling lost envelopes")
        return done

    async def close(self) -> None:
        """Wait for in-flight deliveries to give their slots back, then QUIT every session."""
        self._closed = True
        slots = [await self._idle.get() for _ in range(self._max)]
        for slot in slots:
            if slot.session is not None:
                await slot.session.close()
                slot.session = None
            self._idle.put_nowait(slot)
