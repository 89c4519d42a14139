"""The `make run` SMS transport: no Twilio credentials, so each SMS becomes one JSON line in a file.

BRIEF.md ("Real parts"): without Twilio credentials, SMS go to a capture file under ./var/. The line holds
what Twilio would have been asked to send, plus the encoding report, so a developer sees segments and
accents exactly as a campaign would be charged. Writes run in a worker thread (the event loop never waits on
the disk) and one lock keeps lines whole and in order.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from sender.sms_encoding import analyse_sms
from sender.sms_transport import Outcome, SmsEnvelope, SmsResult


class SmsCaptureTransport:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._lock = asyncio.Lock()

    async def send(self, batch: Sequence[SmsEnvelope]) -> list[SmsResult]:
        # A Twilio-shaped SID ("SM" + 32 hex) so that ledger code needs no special case.
        sids = [f"SM{uuid.uuid4().hex}" for _ in batch]
        now = datetime.now(UTC).isoformat()
        lines = [_line(envelope, sid, now) for envelope, sid in zip(batch, sids, strict=True)]
        async with self._lock:
            await asyncio.to_thread(self._append, lines)
        return [
            SmsResult(envelope.message_id, Outcome.SENT, sid, text="captured")
            for envelope, sid in zip(batch, sids, strict=True)
        ]

    def _append(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.writelines(lines)

    async def close(self) -> None:
        return None


def _line(envelope: SmsEnvelope, sid: str, captured_at: str) -> str:
    report = analyse_sms(envelope.body)
    record = {
        "sid": sid,
        "message_id": envelope.message_id,
        "to": envelope.to,
        "from": envelope.sender.from_ or None,
        "messaging_service_sid": envelope.sender.messaging_service_sid or None,
        "body": envelope.body,
        "encoding": str(report.encoding),
        "segments": report.segments,
        "status_callback": envelope.status_callback,
        "captured_at": captured_at,
    }
    return json.dumps(record, ensure_ascii=False) + "\n"


def read_captured(path: Path | str) -> list[dict[str, object]]:
    """Every captured SMS, oldest first (for tests and the developer's `make run` loop)."""
    file = Path(path)
    if not file.exists():
        return []
    with file.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
