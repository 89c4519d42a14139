"""The `make run` SMS transport: one JSON line per SMS in a capture file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sender.sms_capture import SmsCaptureTransport, read_captured
from sender.sms_transport import Outcome, SmsEnvelope, SmsSender

SENDER = SmsSender(from_="MARTIN")


async def test_each_sms_is_captured_as_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "var" / "sms" / "outbox.jsonl"  # parent directories are created on demand
    transport = SmsCaptureTransport(path)
    results = await transport.send(
        [
            SmsEnvelope(1, "+33612345678", "Martin: -20%\nSTOP au 36180", SENDER),
            SmsEnvelope(2, "+33698765432", "Martin: ça démarre\nSTOP au 36180", SENDER, "https://x.fr/cb?m=2"),
        ]
    )
    await transport.close()

    assert [(r.message_id, r.outcome) for r in results] == [(1, Outcome.SENT), (2, Outcome.SENT)]
    lines = read_captured(path)
    assert [line["sid"] for line in lines] == [r.sid for r in results]
    assert lines[0]["to"] == "+33612345678"
    assert lines[0]["from"] == "MARTIN"
    assert lines[0]["encoding"] == "GSM-7"
    assert lines[1]["body"] == "Martin: ça démarre\nSTOP au 36180"  # UTF-8 kept readable
    assert lines[1]["encoding"] == "UCS-2"
    assert lines[1]["status_callback"] == "https://x.fr/cb?m=2"
    assert path.read_text(encoding="utf-8").count("\n") == 2


async def test_concurrent_batches_keep_lines_whole(tmp_path: Path) -> None:
    path = tmp_path / "sms.jsonl"
    transport = SmsCaptureTransport(path)
    batches = [[SmsEnvelope(b * 10 + i, "+33612345678", "x" * 300, SENDER) for i in range(10)] for b in range(5)]
    await asyncio.gather(*(transport.send(batch) for batch in batches))
    lines = read_captured(path)
    assert sorted(int(str(line["message_id"])) for line in lines) == list(range(50))
    assert all(line["segments"] == 2 for line in lines)


def test_reading_a_missing_capture_file_gives_nothing(tmp_path: Path) -> None:
    assert read_captured(tmp_path / "none.jsonl") == []
