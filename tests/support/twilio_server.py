"""A local HTTP server that speaks Twilio's REST shape for the Messages resource, for tests and benches.

- `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP Basic auth (account SID + auth
  token) → 201 with a Message resource, or Twilio's error body
  `{"code": 21211, "message": ..., "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`.
- Fault injection: `throttle_next(n)` answers 429 (code 20429) to the next n requests; `fail_number(to, code)`
  answers an error for one recipient; `To` numbers that are not E.164 get 21211, as Twilio does.
- Records every request (`requests`, `wait_for_requests`), with its arrival time (time.monotonic()).
- `LocalTwilioHttpClient` points the official SDK at it through `Client(http_client=...)`, rewriting
  `https://api.twilio.com` like the SDK's own tests/holodeck.py (STANDARDS.md §6: region/edge cannot
  target localhost).
- `sign_twilio_request` signs status callbacks / inbound messages exactly as Twilio does.

`http.server` in a thread: no event loop of its own, so it serves sync and async tests alike.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from twilio.http.response import Response
from twilio.request_validator import RequestValidator

from sender.sms_encoding import analyse_sms
from sender.twilio_http import BoundedTwilioHttpClient

TWILIO_API = "https://api.twilio.com"
TEST_ACCOUNT_SID = "AC" + "0" * 31 + "1"
TEST_AUTH_TOKEN = "test-auth-token-0123456789abcdef"

_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")

ERROR_MESSAGES: dict[int, str] = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number is not a valid phone number.",
    21602: "Message body is required.",
    21603: "The 'From' number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21611: "This 'From' number has exceeded the maximum number of queued messages",
    21614: "'To' number is not a valid mobile number",
    30001: "Queue overflow",
}


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    form: dict[str, str]
    headers: dict[str, str]
    auth_user: str | None
    received_at: float  # time.monotonic()
    status: int  # what the server answered


@dataclass(slots=True)
class _Faults:
    throttle: int = 0
    by_number: dict[str, tuple[int, int]] = field(default_factory=dict)  # to -> (http status, code)


class TwilioTestServer:
    def __init__(self, account_sid: str = TEST_ACCOUNT_SID, auth_token: str = TEST_AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._records: list[RecordedRequest] = []
        self._faults = _Faults()
        self._cond = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> TwilioTestServer:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        httpd.daemon_threads = True
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="twilio-test-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> TwilioTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def http_client(self, *, timeout: float = 5.0, max_connections: int = 32) -> LocalTwilioHttpClient:
        return LocalTwilioHttpClient(self.base_url, timeout=timeout, max_connections=max_connections)

    # --- fault injection -----------------------------------------------------------------------------------

    def throttle_next(self, count: int) -> None:
        """Answer 429 (Twilio code 20429) to the next `count` Messages requests."""
        with self._cond:
            self._faults.throttle = count

    def fail_number(self, to: str, code: int, status: int = 400) -> None:
        """Answer every message to `to` with Twilio error `code`."""
        with self._cond:
            self._faults.by_number[to] = (status, code)

    # --- records -------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._records)

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._records) >= count, timeout=timeout):
                raise TimeoutError(f"expected {count} requests, got {len(self._records)} within {timeout}s")
            return list(self._records)

    # --- request handling (server threads) -----------------------------------------------------------------

    def _answer(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        user, password = _basic_auth(headers.get("Authorization", ""))
        match = _MESSAGES_PATH.match(path)
        with self._cond:
            if method != "POST" or match is None:
                status, payload = _error(404, 20404)
            elif user != self.account_sid or password != self.auth_token or match["sid"] != user:
                status, payload = _error(401, 20003)
            elif self._faults.throttle > 0:
                self._faults.throttle -= 1
                status, payload = _error(429, 20429)
            else:
                status, payload = self._create(match["sid"], form)
            self._records.append(
                RecordedRequest(method, path, form, dict(headers), user, time.monotonic(), status)
            )
            self._cond.notify_all()
        return status, payload

    def _create(self, account_sid: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        to = form.get("To", "")
        if not to:
            return _error(400, 21604)
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return _error(400, 21603)
        if not form.get("Body"):
            return _error(400, 21602)
        if not _E164.match(to):
            return _error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if to in self._faults.by_number:
            return _error(*self._faults.by_number[to])
        sid = f"SM{uuid.uuid4().hex}"
        now = formatdate(usegmt=True)
        report = analyse_sms(form["Body"])
        return 201, {
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From") or None,
            "messaging_service_sid": form.get("MessagingServiceSid") or None,
            "num_media": "0",
            "num_segments": str(report.segments),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            # Through a Messaging Service without a From, Twilio answers "accepted" (sender not chosen yet).
            "status": "accepted" if not form.get("From") else "queued",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}/Media.json"},
            "to": to,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        }


def _error(status: int, code: int, message: str | None = None) -> tuple[int, dict[str, Any]]:
    return status, {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _basic_auth(header: str) -> tuple[str | None, str | None]:
    if not header.startswith("Basic "):
        return None, None
    try:
        user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return None, None
    return user, password


def _handler_for(server: TwilioTestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's pooled client expects

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            status, payload = server._answer(self.command, path, dict(self.headers.items()), body)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "1")
            self.end_headers()
            self.wfile.write(data)

        do_POST = _handle
        do_GET = _handle

        def log_message(self, format: str, *args: Any) -> None:  # tests stay quiet
            return

    return Handler


class LocalTwilioHttpClient(BoundedTwilioHttpClient):
    """The production HTTP client with `https://api.twilio.com` rewritten to the local server."""

    def __init__(self, base_url: str, *, timeout: float = 5.0, max_connections: int = 32) -> None:
        super().__init__(timeout=timeout, max_connections=max_connections)
        self.base_url = base_url.rstrip("/")

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Response:
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return await super().request(method, url, *args, **kwargs)


# --- signing webhooks as Twilio does ---------------------------------------------------------------------


def sign_twilio_request(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The `X-Twilio-Signature` Twilio would send: base64 HMAC-SHA1 over the full URL + sorted POST params."""
    return str(RequestValidator(auth_token).compute_signature(url, dict(params)))


def status_callback_params(
    message_sid: str,
    status: str,
    *,
    to: str,
    from_: str,
    account_sid: str = TEST_ACCOUNT_SID,
    error_code: int | None = None,
    messaging_service_sid: str | None = None,
) -> dict[str, str]:
    """The form Twilio POSTs to a message's StatusCallback URL."""
    params = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "From": from_,
        "MessageSid": message_sid,
        "MessageStatus": status,
        "SmsSid": message_sid,
        "SmsStatus": status,
        "To": to,
    }
    if error_code is not None:
        params["ErrorCode"] = str(error_code)
    if messaging_service_sid:
        params["MessagingServiceSid"] = messaging_service_sid
    return params


def inbound_sms_params(from_: str, to: str, body: str, *, account_sid: str = TEST_ACCOUNT_SID) -> dict[str, str]:
    """The form Twilio POSTs to a number's incoming-message webhook."""
    sid = f"SM{uuid.uuid4().hex}"
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "Body": body,
        "From": from_,
        "MessageSid": sid,
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsMessageSid": sid,
        "SmsSid": sid,
        "SmsStatus": "received",
        "To": to,
    }
