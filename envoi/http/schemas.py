"""Request bodies. Unknown fields are refused (extra="forbid"); addresses are checked with email-validator."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from crm.phones import PhoneNumberError, normalize_mobile


def _email(value: str) -> str:
    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise ValueError(f"invalid email address: {exc}") from None


def _mobile(value: str) -> str:
    try:
        return normalize_mobile(value)
    except PhoneNumberError as exc:
        raise ValueError(exc.detail if exc.detail else str(exc)) from None


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must be a single line (no CR or LF)")
    return value


# Ledger ids are positive 64-bit integers: anything else can name no row (and would overflow the driver).
DbId = Annotated[int, Field(ge=1, le=2**63 - 1)]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Mobile = Annotated[str, Field(max_length=40), AfterValidator(_mobile)]
Line = Annotated[str, Field(max_length=500), AfterValidator(_one_line)]


def _no_nul(value: Any, depth: int = 0) -> Any:
    """PostgreSQL text cannot hold U+0000, and no legitimate CRM field needs it: refuse it up front (422)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("NUL characters (U+0000) are not allowed")
    elif isinstance(value, dict) and depth < 20:
        for k, v in value.items():
            _no_nul(k, depth + 1)
            _no_nul(v, depth + 1)
    elif isinstance(value, list | tuple) and depth < 20:
        for v in value:
            _no_nul(v, depth + 1)
    return value


class Strict(BaseModel):
    """Base of every request body: unknown fields refused, strings stripped, no NUL characters anywhere."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _refuse_nul(cls, value: Any) -> Any:
        return _no_nul(value)


class ConsentIn(Strict):
    channel: Literal["email", "sms"]
    status: Literal["granted", "withdrawn"] = "granted"
    legal_basis: Literal["opt_in", "soft_opt_in", "b2b"] = "opt_in"
    source: Line = Field(min_length=1, description="where consent was collected: form and version")
    wording: Annotated[str, Field(max_length=5000)] | None = None
    ip: Annotated[str, Field(max_length=45)] | None = None
    user_agent: Annotated[str, Field(max_length=500)] | None = None
    given_at: datetime | None = None
    double_opt_in_at: datetime | None = None


class ContactIn(Strict):
    email: Email | None = None
    mobile: Mobile | None = None
    first_name: Annotated[str, Field(max_length=200)] | None = None
    last_name: Annotated[str, Field(max_length=200)] | None = None
    birth_date: date | None = None
    crm_id: Annotated[str, Field(max_length=200)] | None = None
    cookie_id: Annotated[str, Field(max_length=200)] | None = None
    locale: Annotated[str, Field(max_length=20)] | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    consents: list[ConsentIn] = Field(default_factory=list, max_length=10)
    lists: list[DbId] = Field(default_factory=list, max_length=100)


class SenderProfileIn(Strict):
    legal_name: Line = Field(min_length=1)
    postal_address: Line = Field(min_length=1)
    phone: Annotated[str, Field(min_length=1, max_length=40), AfterValidator(_one_line)]
    from_email: Email
    from_name: Line = ""
    reply_to: Email | None = None
    sms_sender_id: Annotated[str, Field(max_length=11, pattern=r"^[A-Za-z0-9 ]*$")] = ""


class ListIn(Strict):
    name: Line = Field(min_length=1, max_length=200)


class MembersIn(Strict):
    contact_ids: list[DbId] = Field(min_length=1, max_length=10_000)


class TemplateIn(Strict):
    name: Line = Field(min_length=1, max_length=200)
    subject: Line = Field(min_length=1, max_length=998)
    html: Annotated[str, Field(max_length=500_000)] = ""
    text: Annotated[str, Field(max_length=500_000)] = ""


class CampaignIn(Strict):
    name: Line = Field(min_length=1, max_length=200)
    list_id: DbId
    template_id: DbId
    channel: Literal["email", "sms"] = "email"  # sms (issue 6): the template's text is the SMS body
    kind: Literal["marketing", "transactional"] = "marketing"
    from_email: Email | None = None
    from_name: Line | None = None
    reply_to: Email | None = None


class EmailSendIn(Strict):
    to: Email
    subject: Line | None = Field(default=None, max_length=998)
    html: Annotated[str, Field(max_length=500_000)] = ""
    text: Annotated[str, Field(max_length=500_000)] = ""
    template_id: DbId | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    from_email: Email | None = None
    from_name: Line | None = None
    reply_to: Email | None = None
    kind: Literal["transactional", "marketing"] = "transactional"
