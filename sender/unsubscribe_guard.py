"""The unsubscribe hand-off guard and its outcome sink (issue 5), wired by `envoi.composition.dispatch_hooks`.

The guard runs on each batch right before `transport.deliver`. It refuses:
- addresses suppressed since the batch was loaded (the Redis fence, `unsubscribe.fence`), and marks the others
  in flight so that a concurrent unsubscribe waits for their hand-off to end;
- erased addresses, which stay on the suppression list only as a keyed hash (GDPR art. 17), matched in SQL.
The sink drops the in-flight marks once the outcomes are recorded (the transport has returned by then).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine

from crm import ledger
from crm.address_hash import AddressHasher
from crm.domain import Channel, SkipReason
from sender.hooks import Action, Recorded, Verdict
from unsubscribe.fence import Candidate, SuppressionFence

_SUPPRESSED = Verdict(Action.SUPPRESS, SkipReason.SUPPRESSED.value)


def _candidate(m: Mapping[str, Any]) -> Candidate:
    return Candidate(int(m["id"]), int(m["account_id"]), str(m["channel"]), str(m["recipient"]))


class UnsubscribeGuard:
    def __init__(self, fence: SuppressionFence, engine: Engine | None = None,
                 hasher: AddressHasher | None = None) -> None:
        self.fence = fence
        self.engine = engine
        self.hasher = hasher

    def _erased(self, messages: Sequence[Mapping[str, Any]]) -> set[int]:
        assert self.engine is not None and self.hasher is not None
        by_account: dict[tuple[int, str], list[Mapping[str, Any]]] = {}
        for m in messages:
            by_account.setdefault((int(m["account_id"]), str(m["channel"])), []).append(m)
        out: set[int] = set()
        with self.engine.connect() as conn:
            for (account_id, channel), group in by_account.items():
                hit = ledger.erased_addresses(conn, account_id, Channel(channel),
                                              [str(m["recipient"]) for m in group], self.hasher)
                out.update(int(m["id"]) for m in group if m["recipient"] in hit)
        return out

    async def check(self, messages: Sequence[Mapping[str, Any]]) -> Mapping[int, Verdict]:
        refused: set[int] = set()
        if self.engine is not None and self.hasher is not None:
            refused = await asyncio.to_thread(self._erased, messages)
        # The fence check comes last, as close to the hand-off as possible.
        refused |= await self.fence.admit([_candidate(m) for m in messages if int(m["id"]) not in refused])
        return {mid: _SUPPRESSED for mid in refused}


class InflightRelease:
    """OutcomeSink: the hand-off of these messages has ended; a waiting unsubscribe may return."""

    def __init__(self, fence: SuppressionFence) -> None:
        self.fence = fence

    async def record(self, batch: Sequence[Recorded]) -> None:
        await self.fence.release([_candidate(r.message) for r in batch])
