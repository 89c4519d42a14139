"""Amazon SES bounce / complaint notifications delivered by SNS over HTTPS, with the SNS signature verified.

SNS signs a canonical string of the message's fields with the key of a certificate it names by URL
(`SigningCertURL`); anyone can POST a JSON body claiming to be SNS, so (AWS "Verifying the signatures of
Amazon SNS messages"): the certificate URL must be https and its host must be SNS's own
(`sns.<region>.amazonaws.com`), the signature must verify (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA),
and the message must be recent (replays). Tests point the host pattern at a local server by configuration.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tracking.bounces.provider_json import detect_provider_json
from tracking.bounces.result import BounceKind, BounceResult, Correlation

DEFAULT_HOST_PATTERN = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
MAX_AGE_S = 3600.0

_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_SUBSCRIPTION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


class SnsError(ValueError):
    """The request is not a genuine, recent SNS message."""


def string_to_sign(body: Mapping[str, Any]) -> bytes:
    kind = body.get("Type")
    names = _NOTIFICATION_FIELDS if kind == "Notification" else _SUBSCRIPTION_FIELDS
    out = []
    for name in names:
        value = body.get(name)
        if value is None:
            if name == "Subject":
                continue  # optional, and then not part of the signed string
            raise SnsError(f"missing {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


class SnsVerifier:
    def __init__(self, host_pattern: str = DEFAULT_HOST_PATTERN, require_https: bool = True,
                 topic_arns: Sequence[str] = (), fetch: Callable[[str], Awaitable[bytes]] | None = None,
                 max_age_s: float = MAX_AGE_S) -> None:
        self.host = re.compile(host_pattern, re.IGNORECASE)
        self.require_https = require_https
        self.topic_arns = frozenset(topic_arns)
        self._fetch = fetch or _fetch
        self.max_age_s = max_age_s
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    def trusted_url(self, url: str) -> bool:
        """The host must be SNS's (the pattern matches the whole host, so sns.x.amazonaws.com.evil.org fails)."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return False
        if parts.scheme != "https" and (self.require_https or parts.scheme != "http"):
            return False
        host = parts.hostname or ""
        return bool(self.host.fullmatch(host)) and not parts.username and not parts.password

    async def verify(self, body: Mapping[str, Any]) -> None:
        if body.get("Type") not in ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"):
            raise SnsError("unknown Type")
        if self.topic_arns and body.get("TopicArn") not in self.topic_arns:
            raise SnsError("topic not allowed")
        url = str(body.get("SigningCertURL") or "")
        if not self.trusted_url(url):
            raise SnsError("certificate URL not trusted")
        version = str(body.get("SignatureVersion") or "")
        algorithm: hashes.HashAlgorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # v1: SHA1 (AWS)
        if version not in ("1", "2"):
            raise SnsError("unknown SignatureVersion")
        try:
            signature = base64.b64decode(str(body.get("Signature") or ""), validate=True)
        except ValueError as exc:
            raise SnsError("signature not base64") from exc
        key = await self._key(url)
        try:
            key.verify(signature, string_to_sign(body), padding.PKCS1v15(), algorithm)
        except InvalidSignature as exc:
            raise SnsError("bad signature") from exc
        try:
            at = datetime.fromisoformat(str(body.get("Timestamp")).replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise SnsError("bad Timestamp") from exc
        if abs(time.time() - at) > self.max_age_s:
            raise SnsError("message too old")

    async def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._keys.get(url)
        if key is None:
            try:
                cert = x509.load_pem_x509_certificate(await self._fetch(url))
            except (ValueError, httpx.HTTPError) as exc:
                raise SnsError("certificate unavailable") from exc
            public = cert.public_key()
            if not isinstance(public, rsa.RSAPublicKey):
                raise SnsError("certificate key is not RSA")
            if len(self._keys) > 64:
                self._keys.clear()
            self._keys[url] = key = public
        return key


async def _fetch(url: str) -> bytes:
    async with httpx.AsyncClient(timeout=5.0, follow_redirects=False) as client:
        response = await client.get(url)
        response.raise_for_status()
        if len(response.content) > 64_000:
            raise ValueError("certificate too large")
        return response.content


def ses_results(message: str) -> list[BounceResult]:
    """An SES notification (the SNS `Message`) → one result per bounced / complaining recipient."""
    try:
        data = json.loads(message)
    except ValueError:
        return []
    if not isinstance(data, dict):
        return []
    mail: dict[str, Any] = data["mail"] if isinstance(data.get("mail"), dict) else {}
    hints = _correlation(mail)
    kind = str(data.get("notificationType") or data.get("eventType") or "").lower()
    section: dict[str, Any] = data[kind] if isinstance(data.get(kind), dict) else {}
    listed = section.get("bouncedRecipients") or section.get("complainedRecipients") or [{}]
    out = []
    for item in listed if isinstance(listed, list) else [{}]:
        one = dict(data)
        one[kind] = dict(section, bouncedRecipients=[item]) if kind == "bounce" else \
            dict(section, complainedRecipients=[item])
        found = detect_provider_json(json.dumps(one))
        if found is None:
            continue
        recipient, verdict, diagnostic = found
        if verdict.kind is BounceKind.OTHER:
            continue
        out.append(BounceResult(verdict.kind, recipient, verdict.status, verdict.reason, "ses-sns", diagnostic,
                                hints))
    return out


def _correlation(mail: Mapping[str, Any]) -> Correlation:
    from tracking.bounces.correlate import VERP_RE

    verp = None
    for value in (mail.get("source"), mail.get("returnPath")):
        m = VERP_RE.search(str(value or ""))
        if m:
            verp = m[1]
            break
    ref = message_id = None
    for h in mail.get("headers") or []:
        if not isinstance(h, dict):
            continue
        name = str(h.get("name", "")).lower()
        if name == "x-envoi-ref":
            ref = str(h.get("value", "")).strip()
        elif name == "message-id":
            message_id = str(h.get("value", "")).strip()
    common: Mapping[str, Any] = mail["commonHeaders"] if isinstance(mail.get("commonHeaders"), dict) else {}
    message_id = message_id or (str(common.get("messageId")) if common.get("messageId") else None)
    return Correlation(verp_local=verp, envoi_ref=ref, message_id=message_id)
