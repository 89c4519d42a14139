"""Settings: read from the environment once, into a frozen object passed down. Bad values fail at start-up
with a message that names the variable."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path


class ConfigError(ValueError):
    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "127.0.0.1"
    port: int = 2525
    starttls: str = "off"  # off | opportunistic | required
    implicit_tls: bool = False
    username: str = ""
    password: str = ""
    timeout_s: float = 30.0
    max_connections: int = 10
    max_messages_per_connection: int = 100
    helo_name: str = "envoi.localhost"
    pipelining: bool = True


@dataclass(frozen=True, slots=True)
class Settings:
    var_dir: Path = Path("var")
    database_url: str = ""  # default: sqlite under var_dir
    redis_url: str = ""  # default: spawn redis-server on a unix socket under var_dir
    public_url: str = "http://127.0.0.1:8000"  # base of tracking and unsubscribe links
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    admin_key: str = ""
    # HMAC keys for signed links, newest first; older ones keep verifying (rotation).
    signing_keys: tuple[str, ...] = ()
    bounce_domain: str = "bounces.envoi.localhost"
    unsubscribe_mailbox: str = "unsubscribe@envoi.localhost"
    feedback_id_sender: str = "envoi"
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    capture_smtp_port: int = 2525  # the embedded capture inbox (make run)
    inbound_smtp_port: int = 2526
    workers: int = 2
    partitions: int = 8
    batch_size: int = 200
    fanout_batch_size: int = 1000
    retry_base_s: float = 30.0
    retry_cap_s: float = 3600.0
    retry_max_age_s: float = 24 * 3600.0
    reclaim_idle_s: float = 60.0
    drain_deadline_s: float = 20.0
    max_body_bytes: int = 1_000_000
    max_import_bytes: int = 200_000_000
    metrics_port: int = 9100  # worker processes: metrics_port + worker index

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.var_dir / 'envoi.db').resolve()}"

    @property
    def redis_socket(self) -> Path:
        return (self.var_dir / "redis.sock").resolve()

    def with_(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(name, f"expected an integer, got {raw!r}") from exc
    if value < minimum:
        raise ConfigError(name, f"must be >= {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(name, f"expected a number, got {raw!r}") from exc
    if value <= 0:
        raise ConfigError(name, f"must be > 0, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected true/false, got {raw!r}")


def _signing_keys(env: Mapping[str, str], var_dir: Path) -> tuple[str, ...]:
    raw = env.get("ENVOI_SIGNING_KEYS", "")
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    for k in keys:
        if len(k) < 32:
            raise ConfigError("ENVOI_SIGNING_KEYS", "each key must be at least 32 characters")
    if keys:
        return keys
    # Embedded default: a key generated once and kept under var/ so links survive restarts.
    path = var_dir / "signing.key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return (path.read_text().strip(),)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    var_dir = Path(env.get("ENVOI_VAR_DIR", "var"))
    starttls = env.get("ENVOI_SMTP_STARTTLS", "off")
    if starttls not in {"off", "opportunistic", "required"}:
        raise ConfigError("ENVOI_SMTP_STARTTLS", "expected off, opportunistic or required")
    capture_port = _int(env, "ENVOI_CAPTURE_SMTP_PORT", 2525, 1)
    smtp = SmtpSettings(
        host=env.get("ENVOI_SMTP_HOST", "127.0.0.1"),
        port=_int(env, "ENVOI_SMTP_PORT", capture_port, 1),
        starttls=starttls,
        implicit_tls=_bool(env, "ENVOI_SMTP_TLS", False),
        username=env.get("ENVOI_SMTP_USERNAME", ""),
        password=env.get("ENVOI_SMTP_PASSWORD", ""),
        timeout_s=_float(env, "ENVOI_SMTP_TIMEOUT", 30.0),
        max_connections=_int(env, "ENVOI_SMTP_CONNECTIONS", 10, 1),
        max_messages_per_connection=_int(env, "ENVOI_SMTP_MESSAGES_PER_CONNECTION", 100, 1),
        helo_name=env.get("ENVOI_SMTP_HELO", "envoi.localhost"),
        pipelining=_bool(env, "ENVOI_SMTP_PIPELINING", True),
    )
    public_url = env.get("ENVOI_PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
    if not public_url.startswith(("http://", "https://")):
        raise ConfigError("ENVOI_PUBLIC_URL", "must start with http:// or https://")
    return Settings(
        var_dir=var_dir,
        database_url=env.get("ENVOI_DATABASE_URL", ""),
        redis_url=env.get("ENVOI_REDIS_URL", ""),
        public_url=public_url,
        api_host=env.get("ENVOI_API_HOST", "127.0.0.1"),
        api_port=_int(env, "ENVOI_API_PORT", 8000, 1),
        admin_key=env.get("ENVOI_ADMIN_KEY", ""),
        signing_keys=_signing_keys(env, var_dir),
        bounce_domain=env.get("ENVOI_BOUNCE_DOMAIN", "bounces.envoi.localhost"),
        unsubscribe_mailbox=env.get("ENVOI_UNSUBSCRIBE_MAILBOX", "unsubscribe@envoi.localhost"),
        feedback_id_sender=env.get("ENVOI_FEEDBACK_ID_SENDER", "envoi"),
        smtp=smtp,
        capture_smtp_port=capture_port,
        inbound_smtp_port=_int(env, "ENVOI_INBOUND_SMTP_PORT", 2526, 1),
        workers=_int(env, "ENVOI_WORKERS", 2, 1),
        partitions=_int(env, "ENVOI_PARTITIONS", 8, 1),
        batch_size=_int(env, "ENVOI_BATCH_SIZE", 200, 1),
        fanout_batch_size=_int(env, "ENVOI_FANOUT_BATCH_SIZE", 1000, 1),
        retry_base_s=_float(env, "ENVOI_RETRY_BASE_SECONDS", 30.0),
        retry_cap_s=_float(env, "ENVOI_RETRY_CAP_SECONDS", 3600.0),
        retry_max_age_s=_float(env, "ENVOI_RETRY_MAX_AGE_SECONDS", 24 * 3600.0),
        reclaim_idle_s=_float(env, "ENVOI_RECLAIM_IDLE_SECONDS", 60.0),
        drain_deadline_s=_float(env, "ENVOI_DRAIN_DEADLINE_SECONDS", 20.0),
        max_body_bytes=_int(env, "ENVOI_MAX_BODY_BYTES", 1_000_000, 1024),
        metrics_port=_int(env, "ENVOI_METRICS_PORT", 9100, 0),
    )
