"""The embedded capture inbox: a local SMTP server writing every message it accepts as an .eml file."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class _Capture:
    def __init__(self, outbox: Path) -> None:
        self.outbox = outbox
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        name = f"{uuid.uuid4().hex}.eml"
        tmp = self.outbox / f".{name}.tmp"
        data = envelope.original_content or envelope.content
        if isinstance(data, str):
            data = data.encode()
        head = (f"X-Envoi-Envelope-From: {envelope.mail_from}\r\n"
                f"X-Envoi-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n").encode()
        tmp.write_bytes(head + data)
        os.replace(tmp, self.outbox / name)  # atomic: a reader never sees half a message
        self.count += 1
        return "250 2.0.0 OK captured"


class CaptureSmtp:
    def __init__(self, outbox: Path, host: str = "127.0.0.1", port: int = 2525) -> None:
        outbox.mkdir(parents=True, exist_ok=True)
        self.handler = _Capture(outbox)
        self.controller = Controller(self.handler, hostname=host, port=port, data_size_limit=50_000_000,
                                     enable_SMTPUTF8=True, decode_data=False, ready_timeout=10)

    def start(self) -> CaptureSmtp:
        self.controller.start()
        return self

    @property
    def port(self) -> int:
        return int(self.controller.port)

    def stop(self) -> None:
        self.controller.stop()
