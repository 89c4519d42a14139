"""Per-request dependencies: the app's services and the authenticated account."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from redis.asyncio import Redis
from sqlalchemy.engine import Engine

from crm import accounts as account_repo
from envoi.http.problems import Problem
from envoi.settings import Settings
from sender.links import Links
from sender.queue import DispatchQueue


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    engine: Engine
    redis: Redis
    queue: DispatchQueue
    links: Links


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "unauthorized", "Missing API key", "send 'Authorization: Bearer <api key>'",
                      field="Authorization")
    return token.strip()


def current_account(request: Request) -> account_repo.Account:
    token = _bearer(request)
    with services(request).engine.connect() as conn:
        account = account_repo.account_for_key(conn, token)
    if account is None:
        raise Problem(401, "unauthorized", "Invalid API key", "this API key is unknown or revoked",
                      field="Authorization")
    return account


def admin(request: Request) -> None:
    expected = services(request).settings.admin_key
    token = _bearer(request)
    import hmac

    if not expected or not hmac.compare_digest(token, expected):
        raise Problem(403, "forbidden", "Admin key required", "this route needs the platform admin key",
                      field="Authorization")
