"""Opening an SMTP session with our own client: greeting, EHLO, STARTTLS, AUTH.

Every failure here becomes `SmtpSetupError` — transient by policy, since it is never the recipient's fault
(see `smtp_replies.SmtpSetupError`). Each step is bounded by the configured timeout.
"""

from __future__ import annotations

import asyncio
import base64
import ssl

from sender.smtp_replies import SmtpRelayConfig, SmtpSetupError, StartTls, describe_error
from sender.smtp_wire import SmtpProtocolError, SmtpWire

_ERRORS = (OSError, EOFError, SmtpProtocolError)


class _Refused(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(f"{code} {text}")
        self.code, self.text = code, text


async def _command(wire: SmtpWire, line: bytes, timeout: float, expect: int) -> str:
    wire.write(line + b"\r\n")
    code, text = await wire.reply(timeout)
    if code != expect:
        raise _Refused(code, text)
    return text


async def _hello(wire: SmtpWire, helo: str, timeout: float) -> frozenset[str]:
    """EHLO, falling back to HELO (RFC 5321 §3.2); the service extensions as upper-case keywords."""
    wire.write(f"EHLO {helo}\r\n".encode())
    code, text = await wire.reply(timeout)
    if code == 250:
        keywords: set[str] = set()
        for line in text.split("\n")[1:]:  # the first line is the server's name
            word, _, rest = line.replace("=", " ", 1).partition(" ")
            keywords.add(word.upper())
            if word.upper() == "AUTH":
                keywords.update(f"AUTH:{m.upper()}" for m in rest.split())
        return frozenset(keywords)
    if 500 <= code < 600:
        await _command(wire, f"HELO {helo}".encode(), timeout, 250)
        return frozenset()
    raise _Refused(code, text)


async def _authenticate(wire: SmtpWire, keywords: frozenset[str], user: str, password: str, timeout: float) -> None:
    # RFC 4954 with the two mechanisms every relay offers; PLAIN costs one round trip (RFC 4616).
    b64 = base64.b64encode
    if "AUTH:PLAIN" in keywords:
        token = b64(b"\0" + user.encode() + b"\0" + password.encode())
        await _command(wire, b"AUTH PLAIN " + token, timeout, 235)
    elif "AUTH:LOGIN" in keywords:
        await _command(wire, b"AUTH LOGIN", timeout, 334)
        await _command(wire, b64(user.encode()), timeout, 334)
        await _command(wire, b64(password.encode()), timeout, 235)
    else:
        raise SmtpSetupError("the relay offers neither AUTH PLAIN nor AUTH LOGIN")


async def open_session(
    config: SmtpRelayConfig, tls: ssl.SSLContext | None, helo: str
) -> tuple[SmtpWire, frozenset[str]]:
    """Connect and make the session ready to carry mail; any failure → SmtpSetupError, the socket closed."""
    loop = asyncio.get_running_loop()
    wire = SmtpWire(loop)
    try:
        await asyncio.wait_for(
            loop.create_connection(
                lambda: wire,
                config.host,
                config.port,
                ssl=tls if config.implicit_tls else None,
                ssl_handshake_timeout=config.timeout_s if config.implicit_tls else None,
            ),
            config.timeout_s,
        )
        return wire, await _dialogue(wire, config, tls, helo)
    except _Refused as exc:
        wire.abort()
        raise SmtpSetupError(exc.text, exc.code) from exc
    except SmtpSetupError:
        wire.abort()
        raise
    except _ERRORS as exc:
        wire.abort()
        raise SmtpSetupError(describe_error(exc)) from exc
    except BaseException:
        wire.abort()
        raise


async def _dialogue(wire: SmtpWire, config: SmtpRelayConfig, tls: ssl.SSLContext | None, helo: str) -> frozenset[str]:
    t = config.timeout_s
    code, text = await wire.reply(t)
    if code != 220:  # RFC 5321 §3.1: 554 (or 421) at the greeting refuses the session
        raise _Refused(code, text)
    keywords = await _hello(wire, helo, t)
    if config.starttls is not StartTls.OFF and tls is not None:
        if "STARTTLS" in keywords:
            await _command(wire, b"STARTTLS", t, 220)
            await wire.start_tls(tls, config.host, t)
            keywords = await _hello(wire, helo, t)  # RFC 3207 §4.2: forget what was learnt before TLS
        elif config.starttls is StartTls.REQUIRED:
            raise SmtpSetupError(f"STARTTLS required but not offered by {config.host}:{config.port}")
    if config.username is not None and config.password is not None:
        await _authenticate(wire, keywords, config.username, config.password, t)
    return keywords
