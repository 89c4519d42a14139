"""Request bodies. Unknown fields are refused (extra="forbid"); addresses are checked with email-validator."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

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


Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Mobile = Annotated[str, Field(max_length=40), AfterValidator(_mobile)]
Line = Annotated[str, Field(max_length=500), AfterValidator(_one_line)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
    lists: list[int] = Field(default_factory=list, max_length=100)


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
    contact_ids: list[int] = Field(min_length=1, max_length=10_000)


class TemplateIn(Strict):
    name: Line = Field(min_length=1, max_length=200)
    subject: Line = Field(min_length=1, max_length=998)
    html: Annotated[str, Field(max_length=500_000)] = ""
    text: Annotated[str, Field(max_length=500_000)] = ""


class CampaignIn(Strict):
    name: Line = Field(min_length=1, max_length=200)
    list_id: int
    template_id: int
    channel: Literal["email"] = "email"
    kind: Literal["marketing", "transactional"] = "marketing"
    from_email: Email | None = None
    from_name: Line | None = None
    reply_to: Email | None = None


class EmailSendIn(Strict):
    to: Email
    subject: Line | None = Field(default=None, max_length=998)
    html: Annotated[str, Field(max_length=500_000)] = ""
    text: Annotated[str, Field(max_length=500_000)] = ""
    template_id: int | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    from_email: Email | None = None
    from_name: Line | None = None
    reply_to: Email | None = None
    kind: Literal["transactional", "marketing"] = "transactional"
