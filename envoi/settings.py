"""Settings: read from the environment once, into a frozen object passed down. Bad values fail at start-up
with a message that names the variable."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import (
    Any,  # issue 7: typed kwargs of the settings blocks
    TypedDict,  # issue 5
)


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
    # -- issue 7: delivery engine (DKIM, sending domains, direct to MX, shaping) --
    delivery_mode: str = "relay"  # relay (smarthost, ENVOI_SMTP_*) | direct (to each domain's MX)
    dkim_platform_keys: str = ""  # ENVOI_DKIM_PLATFORM_KEYS: `id:base64(32 bytes)`, newest first
    dkim_ed25519: bool = False  # also generate an Ed25519 key per domain and dual-sign (RFC 8463)
    dkim_sign: bool = True  # sign with the From domain's key; off when a relay signs (ENVOI_DKIM_SIGN=false)
    spf_include: str = "_spf.envoi.localhost"  # the platform's SPF include that sending domains must carry
    require_verified_domain: bool = False  # refuse marketing campaigns from an unverified From domain
    dns_nameservers: tuple[str, ...] = ()  # `host[:port]`; empty: the system resolver (/etc/resolv.conf)
    dns_timeout_s: float = 5.0
    dnsbl_zones: tuple[Any, ...] = ()  # guardrails.dnsbl.Zone
    dnsbl_platform_targets: tuple[str, ...] = ()  # the platform's sending IPs and domains
    dnsbl_interval_s: float = 3600.0
    mx_port: int = 25  # direct mode: the port dialled on every MX (tests aim it at a local server)
    tls_required: tuple[str, ...] = ("gmail",)  # providers or recipient domains that get STARTTLS required
    # -- issue 3: guardrails effects (thresholds, suspension, webhooks) --
    # Platform overrides of the contract defaults (ENVOI_GUARDRAIL_<SETTING>, see guardrails.policy): checked at
    # start-up, never looser than the contract.
    guardrail_overrides: dict[str, object] = field(default_factory=dict)
    threshold_scan_s: float = 5.0  # chore: re-judge sending/recent campaigns (complaints arrive after the send)
    webhook_allow_private: bool = False  # allow webhook URLs on loopback/private/link-local ranges (tests, dev)
    webhook_timeout_s: float = 10.0
    webhook_retry_base_s: float = 10.0  # exponential backoff: base * 2^(attempts-1), capped
    webhook_retry_cap_s: float = 3600.0
    webhook_max_age_s: float = 3 * 24 * 3600.0  # give up on an event older than this
    # -- issue 6: SMS through Twilio --
    twilio_account_sid: str = ""  # TWILIO_ACCOUNT_SID; empty: SMS go to the capture file var/sms-outbox.ndjson
    twilio_auth_token: str = field(default="", repr=False)  # TWILIO_AUTH_TOKEN: REST auth + webhook signatures
    sms_rate_per_sender: float = 10.0  # messages per second per number / Messaging Service
    sms_max_in_flight: int = 32
    sms_timeout_s: float = 10.0
    sms_max_segments: int = 10  # platform cap on segments per SMS; an account may only lower it
    sms_opt_out_mention: str = ""  # platform default mention ("STOP au 36xxx"); accounts set their own
    sms_status_callback_url: str = ""  # default: <public_url>/twilio/status?m={message_id}
    # -- issue 5: unsubscribe, consent and data-subject rights --
    # Retirement dates (ISO 8601) of the older signing keys, in order: the i-th date is that of the (i+2)-th key
    # of ENVOI_SIGNING_KEYS. A retired key keeps verifying links for `signing_key_verify_days` after its date.
    signing_keys_retired_at: tuple[datetime, ...] = ()
    signing_key_verify_days: int = 365
    erasure_key: str = field(default="", repr=False)  # HMAC key of erased addresses (never rotate it away)
    unsubscribe_fence_s: float = 15.0  # longest wait of an unsubscribe for a hand-off that raced with it
    retention_purge_period_s: float = 3600.0  # chore: purge terminated accounts' personal data when due
    # -- issue 4: feedback and tracking --
    inbound_smtp_host: str = "127.0.0.1"  # ENVOI_INBOUND_SMTP_HOST: the DSN / ARF listener (port: inbound_smtp_port)
    feedback_mailbox: str = "fbl@envoi.localhost"  # ENVOI_FEEDBACK_MAILBOX: where feedback loops send ARF reports
    tracking_fast_seconds: float = 2.0  # an open/click this soon after the hand-off is a machine (scanner)
    tracking_machine_networks: tuple[str, ...] = ()  # extra CIDRs of image proxies / scanners (machine opens)
    sns_cert_host_pattern: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"  # SNS SigningCertURL host (full match)
    sns_cert_require_https: bool = True
    sns_topic_arns: tuple[str, ...] = ()  # empty: any topic (the signature is still required)

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
        **_delivery_settings(env, var_dir),
        **_guardrail_settings(env),
        **_sms_settings(env),
        **_unsubscribe_settings(env, var_dir),
        **_tracking_settings(env),
    )


def _delivery_settings(env: Mapping[str, str], var_dir: Path) -> dict[str, Any]:
    """Issue 7: delivery mode, DKIM platform key, sending-domain policy, DNS and direct-to-MX settings."""
    mode = env.get("ENVOI_DELIVERY_MODE", "relay")
    if mode not in {"relay", "direct"}:
        raise ConfigError("ENVOI_DELIVERY_MODE", f"expected relay or direct, got {mode!r}")
    platform = env.get("ENVOI_DKIM_PLATFORM_KEYS", "")
    if not platform:
        # Embedded default, like the link signing key: generated once under var/ (production sets the variable).
        path = var_dir / "dkim-platform.key"
        if not path.exists():
            import base64

            var_dir.mkdir(parents=True, exist_ok=True)
            path.write_text("k1:" + base64.b64encode(secrets.token_bytes(32)).decode("ascii"))
            path.chmod(0o600)
        platform = path.read_text().strip()
    else:
        from sender.dkim_keys import DkimKeyError, PlatformKeyring

        try:  # bad configuration fails at start-up, naming the variable (not at the first signature)
            PlatformKeyring.parse(platform)
        except (DkimKeyError, ValueError) as exc:
            raise ConfigError("ENVOI_DKIM_PLATFORM_KEYS", str(exc)) from exc
    servers = tuple(s.strip() for s in env.get("ENVOI_DNS_NAMESERVERS", "").split(",") if s.strip())
    tls = env.get("ENVOI_TLS_REQUIRED")
    return {
        "delivery_mode": mode,
        "dkim_platform_keys": platform,
        "dkim_ed25519": _bool(env, "ENVOI_DKIM_ED25519", False),
        "dkim_sign": _bool(env, "ENVOI_DKIM_SIGN", True),
        "spf_include": env.get("ENVOI_SPF_INCLUDE", "_spf.envoi.localhost").strip(),
        "require_verified_domain": _bool(env, "ENVOI_REQUIRE_VERIFIED_DOMAIN", False),
        "dns_nameservers": servers,
        "dns_timeout_s": _float(env, "ENVOI_DNS_TIMEOUT", 5.0),
        "mx_port": _int(env, "ENVOI_MX_PORT", 25, 1),
        "tls_required": ("gmail",) if tls is None else tuple(t.strip().lower() for t in tls.split(",") if t.strip()),
    }


def _guardrail_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Issue 3: platform guardrail overrides (validated against the contract) and webhook delivery."""
    from guardrails.policy import PolicyError, overrides_from_env, resolve_policy

    try:
        overrides = overrides_from_env(env)
        resolve_policy(overrides)
    except PolicyError as exc:
        raise ConfigError(f"ENVOI_GUARDRAIL_{exc.setting.upper()}", str(exc)) from exc
    return {
        "guardrail_overrides": overrides,
        "threshold_scan_s": _float(env, "ENVOI_THRESHOLD_SCAN_SECONDS", 5.0),
        "webhook_allow_private": _bool(env, "ENVOI_WEBHOOK_ALLOW_PRIVATE", False),
        "webhook_timeout_s": _float(env, "ENVOI_WEBHOOK_TIMEOUT", 10.0),
        "webhook_retry_base_s": _float(env, "ENVOI_WEBHOOK_RETRY_BASE_SECONDS", 10.0),
        "webhook_retry_cap_s": _float(env, "ENVOI_WEBHOOK_RETRY_CAP_SECONDS", 3600.0),
        "webhook_max_age_s": _float(env, "ENVOI_WEBHOOK_MAX_AGE_SECONDS", 3 * 24 * 3600.0),
        # DNSBL checks: off unless zones are given (Spamhaus refuses public resolvers: use your own or DQS).
        "dnsbl_zones": _dnsbl_zones(env),
        "dnsbl_platform_targets": tuple(t.strip() for t in env.get("ENVOI_DNSBL_PLATFORM_TARGETS", "").split(",")
                                        if t.strip()),
        "dnsbl_interval_s": _float(env, "ENVOI_DNSBL_INTERVAL_SECONDS", 3600.0),
    }


def _dnsbl_zones(env: Mapping[str, str]) -> tuple[Any, ...]:
    from guardrails.dnsbl import parse_zones

    try:
        return parse_zones(env.get("ENVOI_DNSBL_ZONES", ""))
    except ValueError as exc:
        raise ConfigError("ENVOI_DNSBL_ZONES", f"expected zone[:ip|domain],...: {exc}") from exc


def _sms_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Issue 6: Twilio credentials (optional: without them SMS are captured under var/) and SMS limits."""
    sid = env.get("TWILIO_ACCOUNT_SID", "").strip()
    token = env.get("TWILIO_AUTH_TOKEN", "").strip()
    if sid and not token:
        raise ConfigError("TWILIO_AUTH_TOKEN", "required when TWILIO_ACCOUNT_SID is set")
    callback = env.get("ENVOI_SMS_STATUS_CALLBACK_URL", "").strip()
    if callback and not callback.startswith(("http://", "https://")):
        raise ConfigError("ENVOI_SMS_STATUS_CALLBACK_URL", "must start with http:// or https://")
    max_segments = _int(env, "ENVOI_SMS_MAX_SEGMENTS", 10, 1)
    if max_segments > 10:
        # 10 x 153 GSM-7 septets is Twilio's 1,600-character body limit: more can never be sent.
        raise ConfigError("ENVOI_SMS_MAX_SEGMENTS", f"must be <= 10, got {max_segments}")
    return {
        "twilio_account_sid": sid,
        "twilio_auth_token": token,
        "sms_rate_per_sender": _float(env, "ENVOI_SMS_RATE_PER_SENDER", 10.0),
        "sms_max_in_flight": _int(env, "ENVOI_SMS_MAX_IN_FLIGHT", 32, 1),
        "sms_timeout_s": _float(env, "ENVOI_SMS_TIMEOUT", 10.0),
        "sms_max_segments": max_segments,
        "sms_opt_out_mention": env.get("ENVOI_SMS_OPT_OUT_MENTION", "").strip(),
        "sms_status_callback_url": callback,
    }


class _UnsubscribeSettings(TypedDict):
    signing_keys_retired_at: tuple[datetime, ...]
    signing_key_verify_days: int
    erasure_key: str
    unsubscribe_fence_s: float
    retention_purge_period_s: float


def _unsubscribe_settings(env: Mapping[str, str], var_dir: Path) -> _UnsubscribeSettings:
    """Issue 5: signing-key retirement, the erasure hash key, the unsubscribe fence, the retention chore."""
    retired: list[datetime] = []
    for raw in (x.strip() for x in env.get("ENVOI_SIGNING_KEYS_RETIRED_AT", "").split(",")):
        if not raw:
            continue
        try:
            when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError("ENVOI_SIGNING_KEYS_RETIRED_AT", f"expected ISO 8601 dates, got {raw!r}") from exc
        retired.append(when if when.tzinfo else when.replace(tzinfo=UTC))
    erasure_key = env.get("ENVOI_ERASURE_KEY", "").strip()
    if erasure_key and len(erasure_key) < 32:
        raise ConfigError("ENVOI_ERASURE_KEY", "must be at least 32 characters")
    if not erasure_key:
        # Embedded default, like the signing key: generated once under var/ (it must outlive restarts).
        path = var_dir / "erasure.key"
        if not path.exists():
            var_dir.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        erasure_key = path.read_text().strip()
    return {
        "signing_keys_retired_at": tuple(retired),
        "signing_key_verify_days": _int(env, "ENVOI_SIGNING_KEY_VERIFY_DAYS", 365, 1),
        "erasure_key": erasure_key,
        "unsubscribe_fence_s": _float(env, "ENVOI_UNSUBSCRIBE_FENCE_SECONDS", 15.0),
        "retention_purge_period_s": _float(env, "ENVOI_RETENTION_PURGE_PERIOD_SECONDS", 3600.0),
    }


def _tracking_settings(env: Mapping[str, str]) -> dict[str, Any]:
    """Issue 4: the inbound feedback listener, machine-open detection, the SES/SNS webhook."""
    import ipaddress
    import re

    networks = tuple(n.strip() for n in env.get("ENVOI_TRACKING_MACHINE_NETWORKS", "").split(",") if n.strip())
    for n in networks:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError as exc:
            raise ConfigError("ENVOI_TRACKING_MACHINE_NETWORKS", f"not a network: {n!r}") from exc
    pattern = env.get("ENVOI_SNS_CERT_HOST_PATTERN", "").strip() or r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ConfigError("ENVOI_SNS_CERT_HOST_PATTERN", f"not a regular expression: {exc}") from exc
    mailbox = env.get("ENVOI_FEEDBACK_MAILBOX", "fbl@envoi.localhost").strip()
    if "@" not in mailbox:
        raise ConfigError("ENVOI_FEEDBACK_MAILBOX", "expected an address local@domain")
    return {
        "inbound_smtp_host": env.get("ENVOI_INBOUND_SMTP_HOST", "127.0.0.1"),
        "feedback_mailbox": mailbox,
        "tracking_fast_seconds": _float(env, "ENVOI_TRACKING_FAST_SECONDS", 2.0),
        "tracking_machine_networks": networks,
        "sns_cert_host_pattern": pattern,
        "sns_cert_require_https": _bool(env, "ENVOI_SNS_CERT_REQUIRE_HTTPS", True),
        "sns_topic_arns": tuple(t.strip() for t in env.get("ENVOI_SNS_TOPIC_ARNS", "").split(",") if t.strip()),
    }
