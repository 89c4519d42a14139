"""Guardrail settings: contract defaults, overrides, and refusal of anything looser than the contract."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from guardrails.failures import FailureRule
from guardrails.policy import (
    CONTRACT_DEFAULTS,
    SETTINGS,
    GuardrailPolicy,
    PolicyError,
    apply_overrides,
    describe_settings,
    overrides_from_env,
    resolve_policy,
)


def test_contract_defaults() -> None:
    assert describe_settings() == {
        "failure_rate_limit": "0.1",
        "failure_min_attempts": "100",
        "complaint_rate_limit": "0.005",
        "complaint_min_count": "3",
        "open_rate_floor": "0.05",
        "open_rate_min_delivered": "100",
        "open_rate_judge_after": "2 days, 0:00:00",
        "failures_to_disable": "3",
        "disable_on_first_user_unknown": "False",
        "overdue_grace_days": "15",
    }
    assert CONTRACT_DEFAULTS.failure_rule == FailureRule(3, False)


def test_every_setting_is_checked_by_type() -> None:
    # A setting without a type entry would be accepted unchecked.
    for name in SETTINGS:
        with pytest.raises(PolicyError):
            apply_overrides(CONTRACT_DEFAULTS, {name: "nonsense"}, "platform")


def test_stricter_overrides_are_applied_in_order() -> None:
    policy = resolve_policy(
        platform={"failure_rate_limit": 0.08, "complaint_min_count": 2},
        account={"failure_rate_limit": 0.05, "disable_on_first_user_unknown": True, "open_rate_judge_after": 86400},
    )
    assert policy.failure_rate_limit == 0.05
    assert policy.complaint_min_count == 2
    assert policy.open_rate_judge_after == timedelta(days=1)
    assert policy.failure_rule == FailureRule(3, True)


def test_account_may_relax_back_to_the_contract_but_not_past_it() -> None:
    policy = resolve_policy(platform={"failure_rate_limit": 0.05}, account={"failure_rate_limit": 0.10})
    assert policy.failure_rate_limit == 0.10


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("failure_rate_limit", 0.1000001),
        ("failure_rate_limit", 0.2),
        ("failure_rate_limit", 0),
        ("failure_min_attempts", 1000),
        ("failure_min_attempts", 0),
        ("complaint_rate_limit", 0.006),
        ("complaint_min_count", 6),
        ("open_rate_floor", 0.04),
        ("open_rate_floor", 0.9),
        ("open_rate_min_delivered", 5000),
        ("open_rate_judge_after", timedelta(days=7)),
        ("open_rate_judge_after", 0),
        ("failures_to_disable", 4),
        ("overdue_grace_days", 30),
        ("disable_on_first_user_unknown", "yes"),
        ("failure_rate_limit", True),
        ("failure_rate_limit", float("nan")),
        ("failure_rate_limit", float("inf")),
        ("open_rate_judge_after", float("inf")),
    ],
)
def test_looser_or_invalid_account_override_is_refused_naming_the_setting(setting: str, value: object) -> None:
    with pytest.raises(PolicyError) as caught:
        resolve_policy(account={setting: value})
    assert caught.value.setting == setting and caught.value.source == "account"
    assert setting in str(caught.value) and "account" in str(caught.value)


def test_platform_errors_name_the_platform() -> None:
    with pytest.raises(PolicyError, match="platform setting 'failure_rate_limit'"):
        resolve_policy(platform={"failure_rate_limit": 0.15})


def test_unknown_setting_is_refused() -> None:
    with pytest.raises(PolicyError, match="unknown setting"):
        resolve_policy(account={"failure_rate": 0.05})


def test_policy_cannot_be_built_looser_directly() -> None:
    with pytest.raises(PolicyError, match="failure_rate_limit"):
        GuardrailPolicy(failure_rate_limit=0.11)


def test_platform_overrides_from_environment() -> None:
    env = {
        "ENVOI_GUARDRAIL_FAILURE_RATE_LIMIT": "8%",
        "ENVOI_GUARDRAIL_OPEN_RATE_JUDGE_AFTER": "3600",
        "ENVOI_GUARDRAIL_DISABLE_ON_FIRST_USER_UNKNOWN": "true",
        "PATH": "/usr/bin",
    }
    policy = resolve_policy(platform=overrides_from_env(env))
    assert policy.failure_rate_limit == pytest.approx(0.08)
    assert policy.open_rate_judge_after == timedelta(hours=1)
    assert policy.disable_on_first_user_unknown


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("ENVOI_GUARDRAIL_FAILURE_RATE_LIMT", "0.05"), ("ENVOI_GUARDRAIL_COMPLAINT_MIN_COUNT", "three")],
)
def test_bad_environment_variable_is_named(variable: str, raw: str) -> None:
    with pytest.raises(PolicyError, match=variable):
        overrides_from_env({variable: raw})


# Any value of any type for any setting: either refused, or the result is within the contract.
any_value = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=30)),
)
# Values of the right type on both sides of each bound, so that many override sets are accepted and checked.
around_bounds: dict[str, st.SearchStrategy[object]] = {
    "failure_rate_limit": st.floats(min_value=0, max_value=0.2),
    "failure_min_attempts": st.integers(0, 300),
    "complaint_rate_limit": st.floats(min_value=0, max_value=0.01),
    "complaint_min_count": st.integers(0, 8),
    "open_rate_floor": st.floats(min_value=0, max_value=0.6),
    "open_rate_min_delivered": st.integers(0, 300),
    "open_rate_judge_after": st.one_of(
        st.timedeltas(min_value=timedelta(0), max_value=timedelta(hours=72)), st.integers(0, 72 * 3600)
    ),
    "failures_to_disable": st.integers(0, 5),
    "disable_on_first_user_unknown": st.booleans(),
    "overdue_grace_days": st.integers(-1, 30),
}
typed_overrides = st.lists(st.sampled_from(SETTINGS), unique=True, max_size=3).flatmap(
    lambda names: st.fixed_dictionaries({name: around_bounds[name] for name in names})
)
overrides = st.one_of(st.dictionaries(st.sampled_from(SETTINGS), any_value, max_size=len(SETTINGS)), typed_overrides)


def _number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _integer(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _seconds(v: object) -> timedelta | None:
    if isinstance(v, timedelta):
        return v
    if _number(v) and abs(v) < 10**9:  # type: ignore[arg-type]
        return timedelta(seconds=v)  # type: ignore[arg-type]
    return None


# Independent statement of the contract bounds (Annex 1, Suspension (ii) and obligation (iii); CGV), as
# written in the issue: not derived from guardrails.policy.
CONTRACT_BOUNDS: dict[str, object] = {
    "failure_rate_limit": lambda v: _number(v) and 0 < v <= 0.10,
    "failure_min_attempts": lambda v: _integer(v) and 1 <= v <= 200,
    "complaint_rate_limit": lambda v: _number(v) and 0 < v <= 0.005,
    "complaint_min_count": lambda v: _integer(v) and 1 <= v <= 5,
    "open_rate_floor": lambda v: _number(v) and 0.05 <= v <= 0.5,
    "open_rate_min_delivered": lambda v: _integer(v) and 1 <= v <= 200,
    "open_rate_judge_after": lambda v: (d := _seconds(v)) is not None and 3600 <= d.total_seconds() <= 48 * 3600,
    "failures_to_disable": lambda v: _integer(v) and 1 <= v <= 3,
    "disable_on_first_user_unknown": lambda v: isinstance(v, bool),
    "overdue_grace_days": lambda v: _integer(v) and 0 <= v <= 15,
}


def value_ok(name: str, value: object) -> bool:
    predicate = CONTRACT_BOUNDS[name]
    assert callable(predicate)
    return bool(predicate(value))


def within_contract(policy: GuardrailPolicy) -> bool:
    return all(value_ok(name, getattr(policy, name)) for name in SETTINGS)


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.one_of(typed_overrides, overrides), st.one_of(typed_overrides, overrides))
@example({}, {"failure_rate_limit": 0.1, "open_rate_judge_after": 3600})
@example({"complaint_min_count": 5}, {"failure_min_attempts": 200, "overdue_grace_days": 0})
def test_no_override_is_ever_looser_than_the_contract(platform: dict[str, object], account: dict[str, object]) -> None:
    try:
        policy = resolve_policy(platform, account)
    except PolicyError as error:
        assert error.setting in SETTINGS and error.source in {"platform", "account"}
        return
    event("accepted")
    assert within_contract(policy)
    # every accepted override took effect: nothing is silently ignored
    for name, value in account.items():
        got = getattr(policy, name)
        assert got == value or (isinstance(value, int | float) and got == timedelta(seconds=value))


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(st.fractions(min_value=0, max_value=1).map(float))
def test_failure_limit_accepted_exactly_when_not_above_ten_percent(limit: float) -> None:
    try:
        policy = dataclasses.replace(CONTRACT_DEFAULTS, failure_rate_limit=limit)
    except PolicyError:
        assert limit == 0 or limit > 0.10
    else:
        assert 0 < policy.failure_rate_limit <= 0.10


@settings(deadline=None)  # shared 2-core CI: timing is not what these tests check
@given(typed_overrides, typed_overrides)
def test_typed_overrides_are_accepted_exactly_within_the_contract(
    platform: dict[str, object], account: dict[str, object]
) -> None:
    all_ok = all(value_ok(n, v) for n, v in platform.items()) and all(value_ok(n, v) for n, v in account.items())
    try:
        policy = resolve_policy(platform, account)
    except PolicyError as error:
        refused = (platform if error.source == "platform" else account)[error.setting]
        assert not value_ok(error.setting, refused)
        assert not all_ok
        return
    event("accepted")
    assert all_ok and within_contract(policy)
    for name, value in {**platform, **account}.items():
        assert getattr(policy, name) in (value, _seconds(value))
