"""Guardrail settings: contract defaults, platform and per-account overrides, never looser than the contract.

Contract, Annex 1, "Suspension" (ii): « plus de dix pour cent (10 %) d'échecs de distribution par événement
de publipostage … plaintes … dépassant le taux de cinq (5) pour mille par domaine et événement de
publipostage … taux d'ouverture inférieur à cinq pour cent (5 %) par événement de publipostage ».
Annex 1, "Obligations du Client" (iii): « après trois (3) échecs de la distribution d'un e-mail, désactiver
définitivement les adresses e-mail concernées ».
CGV, "Suspension des services": quinze (15) jours calendaires for unpaid invoices.

The minimum volumes and the open-rate delay are our executable reading of "per mailing event" (BRIEF,
contract table): they keep a handful of messages from deciding, but each has a cap, because a minimum that
is too high is just a looser contract under another name.

`resolve_policy(platform, account)` applies platform overrides, then account overrides, to the contract
defaults. Both layers are bounded by the contract (not the account by the platform): ops may relax an
account back to the contract's own limits, never past them. Anything outside the bounds raises
`PolicyError` naming the layer and the setting.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from fractions import Fraction

from guardrails.account_state import CONTRACT_OVERDUE_GRACE_DAYS
from guardrails.failures import CONTRACT_FAILURES_TO_DISABLE, FailureRule

CONTRACT_FAILURE_RATE = 0.10  # « plus de dix pour cent (10 %) d'échecs de distribution »
CONTRACT_COMPLAINT_RATE = 0.005  # « cinq (5) pour mille par domaine »
CONTRACT_OPEN_RATE = 0.05  # « taux d'ouverture inférieur à cinq pour cent (5 %) »

# Caps on our own interpretation. 200 attempts: past that, a 10 % failure rate is 20+ bounces, beyond noise.
MAX_FAILURE_MIN_ATTEMPTS = 200
# A domain with 1,000 deliveries and 6 complaints crosses 5 ‰ by the contract's own words; a minimum count
# above 5 would excuse it.
MAX_COMPLAINT_MIN_COUNT = 5
MAX_OPEN_MIN_DELIVERED = 200
# Judging later lets more opens trickle in, i.e. is looser; judging too early measures nothing.
MIN_OPEN_JUDGE_AFTER = timedelta(hours=1)
MAX_OPEN_JUDGE_AFTER = timedelta(hours=48)
# Sanity: a floor above 50 % would suspend healthy accounts; such a value is a typo, not a policy.
MAX_OPEN_RATE_FLOOR = 0.5

ENV_PREFIX = "ENVOI_GUARDRAIL_"


class PolicyError(ValueError):
    """A setting refused: unknown, of the wrong type, or looser than the contract."""

    def __init__(self, setting: str, value: object, reason: str, source: str = "") -> None:
        where = f"{source} " if source else ""
        super().__init__(f"{where}setting {setting!r}={value!r} refused: {reason}")
        self.setting = setting
        self.value = value
        self.reason = reason
        self.source = source


@dataclass(frozen=True, slots=True)
class GuardrailPolicy:
    """Effective guardrail settings; constructing one outside the contract bounds raises `PolicyError`."""

    failure_rate_limit: float = CONTRACT_FAILURE_RATE  # suspend when failures / attempted > limit
    failure_min_attempts: int = 100  # judged continuously once this many deliveries were attempted
    complaint_rate_limit: float = CONTRACT_COMPLAINT_RATE  # per recipient domain: complaints / delivered > limit
    complaint_min_count: int = 3  # ... and at least this many complaints at that domain
    open_rate_floor: float = CONTRACT_OPEN_RATE  # suspend when unique human opens / delivered < floor
    open_rate_min_delivered: int = 100  # the open rate is not judged below this many delivered
    open_rate_judge_after: timedelta = timedelta(hours=48)  # judged once, this long after the send completes
    failures_to_disable: int = CONTRACT_FAILURES_TO_DISABLE  # the 3-failure rule
    disable_on_first_user_unknown: bool = False  # stricter per-account option
    overdue_grace_days: int = CONTRACT_OVERDUE_GRACE_DAYS  # unpaid for more than this → suspended

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check(f.name, getattr(self, f.name), "")

    @property
    def failure_rule(self) -> FailureRule:
        return FailureRule(self.failures_to_disable, self.disable_on_first_user_unknown)


SETTINGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GuardrailPolicy))
_TYPES: dict[str, type] = {
    "failure_rate_limit": float,
    "failure_min_attempts": int,
    "complaint_rate_limit": float,
    "complaint_min_count": int,
    "open_rate_floor": float,
    "open_rate_min_delivered": int,
    "open_rate_judge_after": timedelta,
    "failures_to_disable": int,
    "disable_on_first_user_unknown": bool,
    "overdue_grace_days": int,
}


def _exact(x: float) -> Fraction:
    # Compare decimal intentions, not binary floats (0.1 + tiny must still be "above 10 %").
    return Fraction(repr(x))


def _check(name: str, value: object, source: str) -> None:
    """Raise PolicyError unless `value` is of the right type and within the contract bounds."""

    def refuse(reason: str) -> PolicyError:
        return PolicyError(name, value, reason, source)

    kind = _TYPES.get(name)
    if kind is None:
        raise refuse(f"unknown setting; known settings: {', '.join(SETTINGS)}")
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise refuse("expected a number (a fraction: 0.05 means 5 %)")
        v = _exact(float(value))
        if name == "failure_rate_limit" and not 0 < v <= _exact(CONTRACT_FAILURE_RATE):
            raise refuse("looser than the contract: must be > 0 and ≤ 0.10 (Annex 1, Suspension (ii): 10 %)")
        if name == "complaint_rate_limit" and not 0 < v <= _exact(CONTRACT_COMPLAINT_RATE):
            raise refuse("looser than the contract: must be > 0 and ≤ 0.005 (Annex 1, Suspension (ii): 5 ‰)")
        if name == "open_rate_floor" and not _exact(CONTRACT_OPEN_RATE) <= v <= _exact(MAX_OPEN_RATE_FLOOR):
            raise refuse(f"must be ≥ 0.05 (Annex 1, Suspension (ii): 5 %; lower is looser) and ≤ {MAX_OPEN_RATE_FLOOR}")
        return
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("expected an integer")
        upper = {
            "failure_min_attempts": MAX_FAILURE_MIN_ATTEMPTS,
            "complaint_min_count": MAX_COMPLAINT_MIN_COUNT,
            "open_rate_min_delivered": MAX_OPEN_MIN_DELIVERED,
            "failures_to_disable": CONTRACT_FAILURES_TO_DISABLE,
            "overdue_grace_days": CONTRACT_OVERDUE_GRACE_DAYS,
        }[name]
        lower = 0 if name == "overdue_grace_days" else 1
        if value > upper:
            raise refuse(f"looser than the contract: must be ≤ {upper}")
        if value < lower:
            raise refuse(f"must be ≥ {lower}")
        return
    if kind is bool:
        if not isinstance(value, bool):
            raise refuse("expected true or false")
        return
    if not isinstance(value, timedelta):
        raise refuse("expected a duration")
    if not MIN_OPEN_JUDGE_AFTER <= value <= MAX_OPEN_JUDGE_AFTER:
        raise refuse(
            f"must be within {MIN_OPEN_JUDGE_AFTER}..{MAX_OPEN_JUDGE_AFTER}; "
            "judging later is looser than the contract's 5 % open rate"
        )


def _coerce(name: str, value: object, source: str) -> object:
    """Accept JSON-friendly forms: a duration as a number of seconds, an int where a float is expected."""
    if _TYPES.get(name) is timedelta and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):  # inf, nan, or beyond timedelta's range
            raise PolicyError(name, value, "expected a finite number of seconds", source) from None
    return value


# Built after `_check` exists: constructing a policy validates it.
CONTRACT_DEFAULTS = GuardrailPolicy()


def apply_overrides(base: GuardrailPolicy, overrides: Mapping[str, object], source: str) -> GuardrailPolicy:
    """`base` with `overrides` applied; every value checked and named in the error with its source."""
    changes: dict[str, object] = {}
    for name, raw in overrides.items():
        value = _coerce(name, raw, source)
        _check(name, value, source)
        changes[name] = value
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def resolve_policy(
    platform: Mapping[str, object] | None = None, account: Mapping[str, object] | None = None
) -> GuardrailPolicy:
    """Contract defaults ← platform overrides ← account overrides; each layer bounded by the contract."""
    policy = apply_overrides(CONTRACT_DEFAULTS, platform or {}, "platform")
    return apply_overrides(policy, account or {}, "account")


def _parse_env_value(name: str, raw: str, variable: str) -> object:
    kind = _TYPES[name]
    text = raw.strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError(text)
        if kind is int:
            return int(text)
        if kind is float:
            return float(text.removesuffix("%")) / 100 if text.endswith("%") else float(text)
        return timedelta(seconds=float(text.removesuffix("s")))
    except ValueError:
        raise PolicyError(name, raw, f"cannot parse environment variable {variable}", "platform") from None


def overrides_from_env(environ: Mapping[str, str], prefix: str = ENV_PREFIX) -> dict[str, object]:
    """Platform overrides from `ENVOI_GUARDRAIL_<SETTING>` variables (durations in seconds, rates as 0.05
    or "5%"). An unknown variable under the prefix is an error naming it: a typo must not silently keep the
    default."""
    found: dict[str, object] = {}
    for variable, raw in environ.items():
        if not variable.startswith(prefix):
            continue
        name = variable.removeprefix(prefix).lower()
        if name not in _TYPES:
            raise PolicyError(name, raw, f"unknown environment variable {variable}", "platform")
        found[name] = _parse_env_value(name, raw, variable)
    return found


def describe_settings(policy: GuardrailPolicy = CONTRACT_DEFAULTS) -> dict[str, str]:
    """Setting → value as text, for statistics pages, the admin API and reports."""
    return {name: str(getattr(policy, name)) for name in SETTINGS}
