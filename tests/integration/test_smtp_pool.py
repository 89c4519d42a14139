"""SmtpPool (aiosmtplib) against real aiosmtpd servers, plus the error-translation boundary."""

from __future__ import annotations

import inspect
import ssl
from typing import Any

import aiosmtplib
import pytest

from sender.smtp_pool import SmtpPool, _AioSession, open_aiosmtplib_session
from sender.smtp_replies import SmtpRelayConfig, SmtpSetupError
from sender.transport import Envelope, Outcome
from tests.integration.smtp_transport_contract import *  # noqa: F403 — the shared behaviour, collected here


@pytest.fixture
def transport_cls() -> type:
    return SmtpPool


@pytest.fixture
def server_pipelining() -> bool:
    return False  # aiosmtplib does not pipeline; the advertisement would change nothing


def _every_aiosmtplib_error() -> list[BaseException]:
    """One instance of every exception class aiosmtplib exports, built with the arguments it takes."""
    made: list[BaseException] = []
    for _, cls in inspect.getmembers(aiosmtplib, inspect.isclass):
        if not issubclass(cls, BaseException):
            continue
        params = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        if cls is aiosmtplib.SMTPRecipientsRefused:
            made.append(cls([aiosmtplib.SMTPRecipientRefused(550, "5.1.1 no", "r@example.org")]))
        elif params[:2] == ["code", "message"]:
            extra = ["x@example.org"] * (len(params) - 2)
            made.append(cls(451, "4.3.0 try later", *extra))
        else:
            made.append(cls("boom"))
    return made


ERRORS: list[BaseException] = [
    *_every_aiosmtplib_error(),
    ConnectionResetError(104, "reset"),
    ConnectionRefusedError(111, "refused"),
    BrokenPipeError(32, "broken pipe"),
    TimeoutError(),
    ssl.SSLError(1, "bad record mac"),
    OSError(113, "no route to host"),
    EOFError(),
]


def test_the_error_table_covers_every_aiosmtplib_exception() -> None:
    exported = {c for _, c in inspect.getmembers(aiosmtplib, inspect.isclass) if issubclass(c, BaseException)}
    assert exported <= {type(e) for e in ERRORS}
    assert len(exported) >= 10


class _RaisingClient:
    """Stands in for aiosmtplib.SMTP at the one place the boundary is crossed."""

    def __init__(self, exc: BaseException, where: str) -> None:
        self.exc, self.where, self.is_connected = exc, where, True

    def supports_extension(self, name: str) -> bool:
        return False

    async def _maybe(self, step: str) -> Any:
        if step == self.where:
            raise self.exc
        return aiosmtplib.SMTPResponse(250, "2.0.0 ok")

    async def mail(self, *a: Any, **k: Any) -> Any:
        return await self._maybe("mail")

    async def rcpt(self, *a: Any, **k: Any) -> Any:
        return await self._maybe("rcpt")

    async def data(self, *a: Any, **k: Any) -> Any:
        return await self._maybe("data")

    async def rset(self, *a: Any, **k: Any) -> Any:
        return await self._maybe("rset")

    async def quit(self, *a: Any, **k: Any) -> Any:
        return await self._maybe("quit")

    def close(self) -> None:
        self.is_connected = False


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("where", ["mail", "rcpt", "data"])
async def test_no_library_error_escapes_a_transaction(exc: BaseException, where: str) -> None:
    session = _AioSession(_RaisingClient(exc, where), limit=10)  # type: ignore[arg-type]
    result = await session.send(Envelope(7, "b@example.com", "r@example.org", b"x\r\n"))
    assert result.message_id == 7
    assert result.outcome in (Outcome.TRANSIENT, Outcome.PERMANENT)
    code = getattr(exc, "code", None)
    if code is None:
        assert (result.outcome, result.code) == (Outcome.TRANSIENT, None) and not session.usable
    await session.close()  # never raises either


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__)
async def test_no_library_error_escapes_session_setup(exc: BaseException, monkeypatch: Any) -> None:
    async def connect(self: Any, **kw: Any) -> Any:
        raise exc

    monkeypatch.setattr(aiosmtplib.SMTP, "connect", connect)
    with pytest.raises(SmtpSetupError):
        await open_aiosmtplib_session(SmtpRelayConfig(port=2525, starttls="off"), None)


def test_bad_configuration_names_the_field() -> None:
    with pytest.raises(ValueError, match="starttls"):
        SmtpRelayConfig(starttls="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="implicit_tls"):
        SmtpRelayConfig(implicit_tls=True, starttls="required")
    with pytest.raises(ValueError, match="max_connections"):
        SmtpRelayConfig(max_connections=0)
    with pytest.raises(ValueError, match="password"):
        SmtpRelayConfig(username="u")
