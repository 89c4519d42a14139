"""The CRM data model as SQLAlchemy Core tables (SQLite and PostgreSQL).

Every tenant-owned table carries `account_id`, and every repository query filters on it.
The `messages` table is the ledger and the source of truth: Redis only holds a copy of what is pending.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# BIGINT on PostgreSQL, INTEGER PRIMARY KEY (the rowid alias) on SQLite so that ids autoincrement.
Id = BigInteger().with_variant(Integer(), "sqlite")
Ts = DateTime(timezone=True)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def _account_fk() -> Column[int]:
    return Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)


accounts = Table(
    "accounts",
    metadata,
    _id(),
    Column("name", String(200), nullable=False),
    Column("status", String(20), nullable=False, default="active"),
    Column("suspension_reason", String(64)),
    Column("suspension_evidence", JSON),
    Column("billing_state", String(20), nullable=False, default="current"),
    Column("overdue_since", Ts),
    Column("settings", JSON, nullable=False, default=dict),
    Column("webhook_url", String(2000)),
    Column("created_at", Ts, nullable=False),
    Column("terminated_at", Ts),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    _account_fk(),
    Column("prefix", String(16), nullable=False),  # shown to humans to tell keys apart
    Column("key_hash", String(64), nullable=False, unique=True),  # sha256 of the whole key
    Column("created_at", Ts, nullable=False),
    Column("revoked_at", Ts),
)

sender_profiles = Table(
    "sender_profiles",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("legal_name", String(200), nullable=False, default=""),
    Column("postal_address", String(500), nullable=False, default=""),
    Column("phone", String(40), nullable=False, default=""),
    Column("from_email", String(320), nullable=False, default=""),
    Column("from_name", String(200), nullable=False, default=""),
    Column("reply_to", String(320), nullable=False, default=""),
    Column("sms_sender_id", String(16), nullable=False, default=""),
    Column("updated_at", Ts, nullable=False),
)

sending_domains = Table(
    "sending_domains",
    metadata,
    _id(),
    _account_fk(),
    Column("domain", String(253), nullable=False),
    Column("verified_at", Ts),
    Column("dkim_selector", String(63)),
    Column("dkim_private_key", Text),  # encrypted at rest
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("account_id", "domain"),
)

contacts = Table(
    "contacts",
    metadata,
    _id(),
    _account_fk(),
    Column("email", String(320)),  # lower-cased
    Column("mobile", String(20)),  # E.164
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("birth_date", Date),
    Column("crm_id", String(200)),
    Column("cookie_id", String(200)),
    Column("locale", String(20)),
    Column("attributes", JSON, nullable=False, default=dict),
    # Current consent per channel, denormalised from the ledger in the same transaction (fan-out reads it).
    Column("email_consent", String(12), nullable=False, default="none"),
    Column("sms_consent", String(12), nullable=False, default="none"),
    Column("created_at", Ts, nullable=False),
    Column("updated_at", Ts, nullable=False),
    UniqueConstraint("account_id", "email"),
    UniqueConstraint("account_id", "crm_id"),
)

consents = Table(
    "consents",
    metadata,
    _id(),
    _account_fk(),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("status", String(12), nullable=False),  # granted | withdrawn
    Column("legal_basis", String(20), nullable=False, default="opt_in"),
    Column("source", String(500), nullable=False),
    Column("wording", Text),
    Column("ip", String(45)),
    Column("user_agent", String(500)),
    Column("double_opt_in_at", Ts),
    Column("given_at", Ts, nullable=False),
    Column("recorded_at", Ts, nullable=False),
    Index("ix_consents_contact", "account_id", "contact_id"),
)

lists = Table(
    "lists",
    metadata,
    _id(),
    _account_fk(),
    Column("name", String(200), nullable=False),
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("account_id", "name"),
)

list_members = Table(
    "list_members",
    metadata,
    Column("list_id", Id, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("added_at", Ts, nullable=False),
)

templates = Table(
    "templates",
    metadata,
    _id(),
    _account_fk(),
    Column("name", String(200), nullable=False),
    Column("subject", String(998), nullable=False),
    Column("html", Text, nullable=False, default=""),
    Column("text", Text, nullable=False, default=""),
    Column("created_at", Ts, nullable=False),
)

campaigns = Table(
    "campaigns",
    metadata,
    _id(),
    _account_fk(),
    Column("name", String(200), nullable=False),
    Column("channel", String(10), nullable=False, default="email"),
    Column("kind", String(20), nullable=False, default="marketing"),
    Column("list_id", Id, ForeignKey("lists.id"), nullable=False),
    Column("template_id", Id, ForeignKey("templates.id"), nullable=False),
    Column("from_email", String(320), nullable=False),
    Column("from_name", String(200), nullable=False, default=""),
    Column("reply_to", String(320), nullable=False, default=""),
    Column("status", String(20), nullable=False, default="draft"),
    Column("fanout_cursor", Id, nullable=False, default=0),  # last contact id fanned out
    Column("fanout_done", Boolean, nullable=False, default=False),
    Column("audience", JSON, nullable=False, default=dict),  # {"queued": n, "skipped": {reason: n}}
    Column("created_at", Ts, nullable=False),
    Column("started_at", Ts),
    Column("completed_at", Ts),
    Column("cancelled_at", Ts),
)

messages = Table(
    "messages",
    metadata,
    _id(),
    _account_fk(),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE")),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("channel", String(10), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("recipient_domain", String(253), nullable=False, default=""),
    Column("status", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Ts),
    Column("last_code", Integer),
    Column("last_status", String(16)),  # enhanced status code, e.g. 5.1.1
    Column("last_error", String(1000)),
    Column("payload", JSON),  # transactional sends: subject/html/text/data
    Column("queued_at", Ts, nullable=False),
    Column("sent_at", Ts),
    Column("updated_at", Ts, nullable=False),
    UniqueConstraint("campaign_id", "contact_id"),
    Index("ix_messages_campaign_status", "campaign_id", "status"),
    Index("ix_messages_status", "status"),
    Index("ix_messages_account", "account_id", "id"),
)

events = Table(
    "events",
    metadata,
    _id(),
    _account_fk(),
    Column("message_id", Id),
    Column("campaign_id", Id),
    Column("contact_id", Id),
    Column("type", String(20), nullable=False),
    Column("recipient_domain", String(253)),
    Column("data", JSON),
    Column("created_at", Ts, nullable=False),
    Index("ix_events_campaign_type", "campaign_id", "type"),
    Index("ix_events_message", "message_id"),
)

suppressions = Table(
    "suppressions",
    metadata,
    _id(),
    _account_fk(),
    Column("channel", String(10), nullable=False),
    Column("address", String(320), nullable=False),  # lower-cased email, E.164 number, or a keyed hash
    Column("reason", String(20), nullable=False),
    Column("source", String(100), nullable=False, default="api"),
    Column("campaign_id", Id),
    Column("message_id", Id),
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("account_id", "channel", "address"),
)

audit_log = Table(
    "audit_log",
    metadata,
    _id(),
    Column("account_id", Id),
    Column("actor", String(100), nullable=False),
    Column("action", String(64), nullable=False),
    Column("data", JSON),
    Column("created_at", Ts, nullable=False),
    Index("ix_audit_account", "account_id", "id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer),
    Column("response", JSON),
    Column("created_at", Ts, nullable=False),
)

# Outbox of signed webhooks to the CRM (suspensions, suppressions, ...): written in the same transaction as the
# event it announces, delivered by a worker chore with retries (at-least-once; receivers dedupe on `id`).
webhook_events = Table(
    "webhook_events",
    metadata,
    _id(),
    _account_fk(),
    Column("event_type", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", Ts, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Ts, nullable=False),
    Column("delivered_at", Ts),
    Column("failed_at", Ts),  # gave up after the maximum age
    Column("last_error", String(1000)),
    Index("ix_webhook_events_due", "delivered_at", "failed_at", "next_attempt_at"),
)

# --- issue 4 (feedback and tracking) ---------------------------------------------------------------------------
# The campaign's own link table: a click token names (message, index) and the redirect can only go to a URL stored
# here, so /c/ is never an open redirect. Rows are added when a rendered message first shows a URL; personalised
# URLs (one per recipient) simply add rows. `url_hash` (sha256 hex) keeps the unique key short on both databases.
campaign_links = Table(
    "campaign_links",
    metadata,
    _id(),
    Column("campaign_id", Id, ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("url_hash", String(64), nullable=False),
    Column("url", Text, nullable=False),
    Column("created_at", Ts, nullable=False),
    UniqueConstraint("campaign_id", "idx", name="uq_campaign_links_idx"),
    UniqueConstraint("campaign_id", "url_hash", name="uq_campaign_links_url_hash"),
)

# --- issue 7 (delivery engine: DKIM keys by selector) ------------------------------------------------------------
# Every DKIM key of a sending domain, by selector: `pending` (generated, the customer publishes the record),
# `active` (signs; mirrored in sending_domains.dkim_selector/dkim_private_key), `retired` (no longer signs; its DNS
# record stays published until `retire_after` so that mail signed with it still verifies in transit, M3AAWG).
dkim_keys = Table(
    "dkim_keys",
    metadata,
    _id(),
    _account_fk(),
    Column("domain_id", Id, ForeignKey("sending_domains.id", ondelete="CASCADE"), nullable=False),
    Column("selector", String(63), nullable=False),
    Column("kind", String(16), nullable=False),  # rsa | ed25519
    Column("private_key", Text, nullable=False),  # sealed (sender.dkim_keys), never in clear
    Column("state", String(16), nullable=False),  # pending | active | retired
    Column("created_at", Ts, nullable=False),
    Column("activated_at", Ts),
    Column("retired_at", Ts),
    Column("retire_after", Ts),  # when the retired key's DNS record may be removed
    UniqueConstraint("domain_id", "selector", name="uq_dkim_keys_selector"),
)

# --- issue 3 (guardrails: the three-failure rule) ------------------------------------------------------------------
# One row per (account, e-mail address) that failed at least once: counted failures since the last success and,
# once disabled (for good, Annex 1 obligation iii), when and why. `history` is the evidence shown through the
# API: the last outcomes [{at, message_id, campaign_id, code, status, class, reason, counted}], oldest first.
address_failures = Table(
    "address_failures",
    metadata,
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    Column("address", String(320), primary_key=True),
    Column("consecutive", Integer, nullable=False, default=0),
    Column("disabled_at", Ts),
    Column("cause", String(32)),
    Column("history", JSON, nullable=False, default=list),
    Column("updated_at", Ts, nullable=False),
    Index("ix_address_failures_disabled", "account_id", "disabled_at"),
)

# --- issue 5 (unsubscribe, consent and data-subject rights) ------------------------------------------------------
# One row per unsubscribe action (page, one-click, mailto): what it changed (`effects`: the suppression rows it
# created, the lists it left), so that "undo" restores exactly that and nothing else.
unsubscribe_actions = Table(
    "unsubscribe_actions",
    metadata,
    _id(),
    _account_fk(),
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="SET NULL")),
    Column("message_id", Id),
    Column("campaign_id", Id),
    Column("scope", String(20), nullable=False),  # account | list | all_channels
    Column("source", String(20), nullable=False),  # page | one-click | mailto
    Column("effects", JSON, nullable=False),  # {"suppressions": [id, ...], "lists": [list id, ...]}
    Column("created_at", Ts, nullable=False),
    Column("undone_at", Ts),
    Index("ix_unsubscribe_actions_contact", "account_id", "contact_id"),
)

# --- issue 6 (SMS through Twilio) ----------------------------------------------------------------------------------
# One row per SMS handed to the gateway: Twilio's message SID (the key of its status callbacks), what the message
# cost in segments, and the last delivery status Twilio reported (queued → sent → delivered | undelivered | failed).
sms_messages = Table(
    "sms_messages",
    metadata,
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    _account_fk(),
    Column("sid", String(64)),
    Column("encoding", String(8), nullable=False, default=""),
    Column("segments", Integer, nullable=False, default=0),
    Column("delivery_status", String(16), nullable=False, default="queued"),
    Column("error_code", Integer),
    Column("updated_at", Ts, nullable=False),
    UniqueConstraint("sid", name="uq_sms_messages_sid"),
)
