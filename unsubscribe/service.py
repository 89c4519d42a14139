"""Unsubscribe and undo: the SQL write (suppression + webhook + undo record, one transaction), then the fence.

Shared by the page, RFC 8058 one-click and the mailto handler, so that all three have the same effect and the
same guarantee (see `unsubscribe.fence`)."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.engine import Engine

from crm import unsubscribes
from unsubscribe.fence import SuppressionFence

log = logging.getLogger(__name__)


class UnsubscribeService:
    def __init__(self, engine: Engine, fence: SuppressionFence) -> None:
        self.engine = engine
        self.fence = fence

    def _apply(self, req: unsubscribes.Request) -> unsubscribes.Applied:
        with self.engine.begin() as conn:
            return unsubscribes.apply(conn, req)

    def _undo(self, req: unsubscribes.Request, action_id: int) -> unsubscribes.Undone | None:
        with self.engine.begin() as conn:
            return unsubscribes.undo(conn, req, action_id)

    async def unsubscribe(self, req: unsubscribes.Request) -> unsubscribes.Applied:
        """Returns once the suppression is committed, visible to every hand-off guard, and no hand-off that raced
        with it is still running. Raises if Redis is unreachable (the SQL part is kept; a retry is idempotent)."""
        applied = await asyncio.to_thread(self._apply, req)
        # Published even when nothing changed: a replay after a Redis failure must complete the fence.
        for channel, address in applied.suppressed:
            if not await self.fence.publish(req.account_id, channel.value, address):
                log.warning("unsubscribe of account %s: a hand-off to the address outlived the %.1fs fence wait",
                            req.account_id, self.fence.wait_s)
        return applied

    async def undo(self, req: unsubscribes.Request, action_id: int) -> unsubscribes.Undone | None:
        undone = await asyncio.to_thread(self._undo, req, action_id)
        for channel, address in undone.retracted if undone else []:
            await self.fence.retract(req.account_id, channel.value, address)
        return undone
