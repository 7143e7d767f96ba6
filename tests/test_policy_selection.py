"""A deployed decision uses exactly one of thresholds, gate, scrc."""

from __future__ import annotations

import pytest

from roadwork_ml.policy.selection import ActivePolicy, PolicyConfigError, PolicyKind, validate_active_policy


def test_policy_config_error_is_a_value_error():
    assert issubclass(PolicyConfigError, ValueError)
    assert [k.value for k in PolicyKind] == ["thresholds", "gate", "scrc"]


@pytest.mark.parametrize(
    "policies, expected",
    [
        ({"thresholds": True, "gate": False, "scrc": None}, "thresholds"),
        ({"gate": True}, "gate"),
        ({"scrc": {"alpha": 0.05}, "gate": None, "thresholds": False}, "scrc"),
        ({"scrc": {"enabled": True}, "gate": {"enabled": False}}, "scrc"),
    ],
)
def test_exactly_one_active_policy_is_returned(policies, expected):
    assert validate_active_policy(policies) == expected


@pytest.mark.parametrize(
    "policies",
    [
        {},
        {"thresholds": False, "gate": None, "scrc": False},
        {"scrc": {"enabled": False}},
    ],
)
def test_zero_active_policies_raise(policies):
    with pytest.raises(PolicyConfigError, match="no decision policy is active"):
        validate_active_policy(policies)


@pytest.mark.parametrize(
    "policies",
    [
        {"thresholds": True, "gate": True},
        {"gate": {"threshold": 0.3}, "scrc": True},
        {"thresholds": {}, "gate": True, "scrc": {"alpha": 0.1}},
    ],
)
def test_two_or_more_active_policies_raise(policies):
    with pytest.raises(PolicyConfigError, match="active") as err:
        validate_active_policy(policies)
    assert "exactly one" in str(err.value)


@pytest.mark.parametrize(
    "policies",
    [
        {"threshold": True},  # typo
        {"gate": "yes"},
        {"gate": 1},
        {"scrc": {"enabled": "false"}},
        ["gate"],
    ],
)
def test_malformed_configs_raise(policies):
    with pytest.raises(PolicyConfigError):
        validate_active_policy(policies)


def test_active_policy_carries_parameters_and_round_trips():
    active = ActivePolicy.from_config({"scrc": {"enabled": True, "alpha": 0.05, "delta": 0.1}, "gate": False})
    assert active.kind is PolicyKind.SCRC and active.params == {"alpha": 0.05, "delta": 0.1}
    assert ActivePolicy.from_dict(active.to_dict()) == active
    assert ActivePolicy.from_config({"thresholds": True}).params == {}
    with pytest.raises(PolicyConfigError):
        ActivePolicy.from_config({"thresholds": True, "scrc": True})
    with pytest.raises(PolicyConfigError):
        ActivePolicy.from_dict({"kind": "cascade"})
