"""DKIM signing rate on one core: `sender.dkim.DkimSigner` (OpenSSL) against dkimpy's `dkim.sign` (pure Python
RSA), same RSA-2048 key, same ~5 KB message, same run.

    .venv/bin/python bench/dkim_sign.py [--seconds 3] [--max-signatures 20000]

Each side runs for at most `--seconds` and at most `--max-signatures` signatures, in this one process (one
thread: one core). Every signer's output is verified by dkimpy first, so a broken signer cannot look fast.
The last line is one JSON object: {"ours_per_s", "dkimpy_per_s", "ratio", ...}; `*_cpu_per_s` use this
process's CPU time, a steadier figure on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sender.dkim import DkimSigner, SelectorKey
from sender.dkim_keys import dns_txt_value

DOMAIN = "shop.example"
HEADERS = [
    b"from", b"to", b"subject", b"date", b"message-id", b"reply-to", b"mime-version", b"content-type",
    b"list-id", b"list-unsubscribe", b"list-unsubscribe-post", b"feedback-id",
]  # fmt: skip


def sample_message(size: int = 5_000) -> bytes:
    head = (
        b"From: Shop <news@shop.example>\r\nTo: camille@example.org\r\n"
        b"Subject: =?utf-8?q?Nouveaut=C3=A9s_de_la_semaine?=\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\n"
        b"Message-ID: <1.campaign7@shop.example>\r\nReply-To: contact@shop.example\r\nMIME-Version: 1.0\r\n"
        b"List-Id: Shop news <news.shop.example>\r\n"
        b"List-Unsubscribe: <https://u.envoi.example/u/abc>,\r\n <mailto:unsub-abc@bounce.envoi.example>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\nFeedback-ID: 7:42:campaign:envoi\r\n"
        b'Content-Type: text/html; charset="utf-8"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n'
    )
    line = "<p>Bonjour <b>Camille</b>, voici les nouveautés de la semaine.</p>\r\n".encode()
    return head + line * max(1, (size - len(head)) // len(line))


def rate(sign: Callable[[], object], seconds: float, max_count: int) -> tuple[float, float, int]:
    """(signatures per wall second, per CPU second, count), bounded by both time and count."""
    sign()  # warm-up: first call pays for lazy set-up
    count = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    deadline = wall0 + seconds
    while count < max_count:
        sign()
        count += 1
        if count % 8 == 0 and time.perf_counter() >= deadline:
            break
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return count / wall, count / max(cpu, 1e-9), count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time bound per signer (default 3)")
    parser.add_argument("--max-signatures", type=int, default=20_000, help="count bound per signer")
    parser.add_argument("--size", type=int, default=5_000, help="message size in bytes (default 5000)")
    args = parser.parse_args()

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    records = {
        b"s1._domainkey.shop.example.": dns_txt_value(key),
        b"e1._domainkey.shop.example.": dns_txt_value(ed_key),
    }

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
        value = records.get(name)
        return value.encode() if value else None

    message = sample_message(args.size)
    ours = DkimSigner(DOMAIN, "s1", key)
    dual = DkimSigner(DOMAIN, "s1", key, ed25519=SelectorKey("e1", ed_key))

    def theirs() -> bytes:
        return dkim.sign(message, b"s1", DOMAIN.encode(), pem, include_headers=HEADERS)  # type: ignore[no-any-return]

    for label, header in [("ours", ours.sign(message)), ("dkimpy", theirs())]:
        if not dkim.verify(header + message, dnsfunc=dnsfunc):
            raise SystemExit(f"{label}: signature does not verify; refusing to time a broken signer")
    dual_headers = dual.sign(message)
    verifier = dkim.DKIM(dual_headers + message)
    if not (verifier.verify(idx=0, dnsfunc=dnsfunc) and verifier.verify(idx=1, dnsfunc=dnsfunc)):
        raise SystemExit("dual RSA + Ed25519 signature does not verify")

    ours_wall, ours_cpu, ours_n = rate(lambda: ours.sign(message), args.seconds, args.max_signatures)
    dual_wall, _, dual_n = rate(lambda: dual.sign(message), args.seconds, args.max_signatures)
    theirs_wall, theirs_cpu, theirs_n = rate(theirs, args.seconds, args.max_signatures)

    print(f"message: {len(message)} bytes, RSA-2048, relaxed/relaxed, {len(HEADERS)} header names")
    print(f"ours (cryptography/OpenSSL): {ours_wall:8.0f}/s wall  {ours_cpu:8.0f}/s cpu  ({ours_n} signatures)")
    print(f"ours, RSA + Ed25519 dual:    {dual_wall:8.0f}/s wall  ({dual_n} messages)")
    print(f"dkimpy dkim.sign:            {theirs_wall:8.0f}/s wall  {theirs_cpu:8.0f}/s cpu  ({theirs_n} signatures)")
    print(
        json.dumps(
            {
                "ours_per_s": round(ours_wall, 1),
                "dkimpy_per_s": round(theirs_wall, 1),
                "ratio": round(ours_wall / theirs_wall, 1),
                "ours_cpu_per_s": round(ours_cpu, 1),
                "dkimpy_cpu_per_s": round(theirs_cpu, 1),
                "ours_dual_per_s": round(dual_wall, 1),
                "message_bytes": len(message),
            }
        )
    )


if __name__ == "__main__":
    main()
