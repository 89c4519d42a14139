"""The asynchronous HTTP client handed to the Twilio SDK (`Client(http_client=...)`).

Why not the SDK's own `AsyncTwilioHttpClient`: it forwards `timeout=None` to aiohttp for every call, which
*disables* aiohttp's timeouts (STYLE.md §7: every network call has a timeout), it logs every request at INFO
(phone numbers and bodies in the logs), and it opens its aiohttp session in `__init__`, outside the event
loop. This one keeps the SDK's contract (`twilio.http.AsyncHttpClient.request` returns a
`twilio.http.response.Response`) with a bounded connection pool opened lazily on the running loop.

Tests subclass it to point the SDK at a local Twilio-shaped server (tests/support/twilio_server.py), as the
SDK's own holodeck does.
"""

from __future__ import annotations

import base64
import logging

import aiohttp
from twilio.http import AsyncHttpClient
from twilio.http.response import Response

_logger = logging.getLogger("envoi.twilio_http")


class BoundedTwilioHttpClient(AsyncHttpClient):  # type: ignore[misc]
    def __init__(self, *, timeout: float = 10.0, max_connections: int = 32) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        super().__init__(_logger, True, timeout)
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _open_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_connections),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        return self._session

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        session = self._open_session()
        headers = dict(headers or {})
        if auth:
            # Built by hand: aiohttp 3.13+ deprecates `auth=BasicAuth(...)` and older ones lack encode_basic_auth.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers["Authorization"] = f"Basic {token}"
        async with session.request(
            method.upper(),
            url,
            params=params,  # type: ignore[arg-type]
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout or self.timeout),
            allow_redirects=allow_redirects,
        ) as response:
            text = await response.text()
            return Response(response.status, text, response.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
