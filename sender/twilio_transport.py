"""The Twilio SMS transport: the official SDK's `messages.create_async`, paced per sender.

- Never blocks the event loop: the SDK runs on our aiohttp-based `BoundedTwilioHttpClient` (timeouts, a
  bounded pool); `max_in_flight` bounds concurrent requests.
- Throughput is shaped per sender (issue 6: "messages per second per number / Messaging Service"): starts of
  requests for one `SmsSender.rate_key` are spaced by 1/rate, and no permit of the shared pool is held while
  a message waits for its sender's turn, so a slow sender never starves a fast one.
- Library exceptions are translated here, at the boundary, into `SmsResult`s (`sender.twilio_errors`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
from twilio.base import values
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http import AsyncHttpClient
from twilio.rest import Client

from sender.sms_transport import Outcome, SmsEnvelope, SmsResult
from sender.twilio_errors import classify_rest_error
from sender.twilio_http import BoundedTwilioHttpClient


class TwilioSettingsError(ValueError):
    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str
    auth_token: str = field(repr=False)
    # May contain "{message_id}", filled per message so a callback finds its ledger row even before the SID
    # is recorded. None: no callback (the Messaging Service's own callback URL applies).
    status_callback_url: str | None = None
    rate_per_sender: float = 10.0  # messages per second per number / Messaging Service
    rate_overrides: Mapping[str, float] = field(default_factory=dict)  # per rate_key
    max_in_flight: int = 32
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if not self.account_sid or not self.auth_token:
            raise TwilioSettingsError("TWILIO_ACCOUNT_SID", "account SID and auth token are both required")
        for key, rate in {"*": self.rate_per_sender, **self.rate_overrides}.items():
            if not rate > 0:
                message = f"rate for {key!r} must be > 0, got {rate}"
                raise TwilioSettingsError("ENVOI_SMS_RATE_PER_SENDER", message)
        if self.max_in_flight < 1:
            raise TwilioSettingsError("ENVOI_SMS_MAX_IN_FLIGHT", "must be at least 1")
        if not self.timeout > 0:
            raise TwilioSettingsError("ENVOI_SMS_TIMEOUT", "must be > 0")

    def rate_for(self, rate_key: str) -> float:
        return self.rate_overrides.get(rate_key, self.rate_per_sender)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> TwilioSettings | None:
        """The settings, or None without Twilio credentials (then SMS go to the capture file)."""
        sid = environ.get("TWILIO_ACCOUNT_SID", "").strip()
        if not sid:
            return None
        token = environ.get("TWILIO_AUTH_TOKEN", "").strip()
        if not token:
            raise TwilioSettingsError("TWILIO_AUTH_TOKEN", "required when TWILIO_ACCOUNT_SID is set")

        def number(name: str, default: float) -> float:
            raw = environ.get(name, "").strip()
            try:
                return float(raw) if raw else default
            except ValueError:
                raise TwilioSettingsError(name, f"not a number: {raw!r}") from None

        return cls(
            account_sid=sid,
            auth_token=token,
            status_callback_url=environ.get("ENVOI_SMS_STATUS_CALLBACK_URL", "").strip() or None,
            rate_per_sender=number("ENVOI_SMS_RATE_PER_SENDER", 10.0),
            max_in_flight=int(number("ENVOI_SMS_MAX_IN_FLIGHT", 32)),
            timeout=number("ENVOI_SMS_TIMEOUT", 10.0),
        )


class SenderPacer:
    """Spaces request starts per sender key by 1/rate, then takes a permit of the shared in-flight pool."""

    def __init__(
        self,
        rate_for: Callable[[str], float],
        in_flight: asyncio.Semaphore,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._rate_for = rate_for
        self._in_flight = in_flight
        self._clock = clock
        self._sleep = sleep
        self._locks: dict[str, asyncio.Lock] = {}
        self._next_start: dict[str, float] = {}

    async def acquire(self, key: str) -> None:
        """Wait for `key`'s turn and a pool permit; the caller must `release()` the permit."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # FIFO per key: one waiter at a time holds the turn
            delay = self._next_start.get(key, 0.0) - self._clock()
            if delay > 0:
                await self._sleep(delay)
            await self._in_flight.acquire()
            # Spacing counts from the real start, so queueing for a permit never lets a burst through.
            self._next_start[key] = self._clock() + 1.0 / self._rate_for(key)

    def release(self) -> None:
        self._in_flight.release()


class TwilioSmsTransport:
    def __init__(self, settings: TwilioSettings, *, http_client: AsyncHttpClient | None = None) -> None:
        self._settings = settings
        self._http = http_client or BoundedTwilioHttpClient(
            timeout=settings.timeout, max_connections=settings.max_in_flight
        )
        self._client = Client(settings.account_sid, settings.auth_token, http_client=self._http)
        self._pacer = SenderPacer(settings.rate_for, asyncio.Semaphore(settings.max_in_flight))

    async def send(self, batch: Sequence[SmsEnvelope]) -> list[SmsResult]:
        return list(await asyncio.gather(*(self._send_one(envelope) for envelope in batch)))

    async def close(self) -> None:
        await self._http.close()

    def _callback_for(self, envelope: SmsEnvelope) -> str | None:
        url = envelope.status_callback or self._settings.status_callback_url
        return url.replace("{message_id}", str(envelope.message_id)) if url else None

    async def _send_one(self, envelope: SmsEnvelope) -> SmsResult:
        sender = envelope.sender
        await self._pacer.acquire(sender.rate_key)
        try:
            message = await self._client.messages.create_async(
                to=envelope.to,
                body=envelope.body,
                from_=sender.from_ or values.unset,
                messaging_service_sid=sender.messaging_service_sid or values.unset,
                status_callback=self._callback_for(envelope) or values.unset,
            )
        except TwilioRestException as exc:
            return self._error(envelope, exc.status, exc.code, exc.msg)
        except TwilioServiceException as exc:  # RFC 9457 error bodies, newer Twilio APIs
            return self._error(envelope, exc.status, exc.code, exc.title)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # No answer read: nothing was (knowingly) accepted, retry later.
            return SmsResult(envelope.message_id, Outcome.TRANSIENT, None, text=f"network error: {exc!r}")
        finally:
            self._pacer.release()
        status = str(message.status)  # "queued", or "accepted" through a Messaging Service
        return SmsResult(envelope.message_id, Outcome.SENT, message.sid, http_status=201, text=status)

    @staticmethod
    def _error(envelope: SmsEnvelope, status: int | None, code: int | None, text: str) -> SmsResult:
        code = int(code) if code is not None and code != status else None
        outcome = classify_rest_error(status, code)
        return SmsResult(envelope.message_id, outcome, None, error_code=code, http_status=status, text=text)
