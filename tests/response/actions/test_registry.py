"""The action registry: every action keeps the contract's shape, and its parameters are checked
like config (unknown keys, wrong types and bad values are errors with a dotted path and line)."""

from __future__ import annotations

import dataclasses

import pytest

from otelguard.config import ConfigError, load_yaml
from otelguard.response.actions.base import ActionError
from otelguard.response.actions.registry import ACTIONS, action_class, as_json, params

NEEDS_VALUES = {"label_pod"}  # no useful default: a policy must say what to set


def test_every_action_keeps_the_contract_shape() -> None:
    assert set(ACTIONS) == {"label_pod", "isolate_pod", "cordon_node", "scale_to_zero",
                            "rollback_deployment", "delete_pod", "freeze_container",
                            "kill_process", "block_peer"}
    for name, cls in ACTIONS.items():
        assert cls.name == name
        assert cls.where in ("cluster", "node"), name
        assert isinstance(cls.reversible, bool), name
        assert dataclasses.is_dataclass(cls.Params), name
        assert cls.Params.__dataclass_params__.frozen, name
        for method in ("plan", "apply", "revert"):
            assert callable(getattr(cls, method)), (name, method)
        if cls.where == "cluster":
            assert cls.rbac and all(verbs for _, _, verbs in cls.rbac), name
    assert {n for n, c in ACTIONS.items() if not c.reversible} == {"delete_pod", "kill_process"}


@pytest.mark.parametrize("name", sorted(set(ACTIONS) - NEEDS_VALUES))
def test_defaults_build_and_round_trip_through_json(name: str) -> None:
    p = params(name, None)
    assert p == params(name, {})
    assert params(name, as_json(p)) == p


def test_unknown_keys_and_bad_values_are_errors_with_a_path() -> None:
    with pytest.raises(ConfigError) as err:
        params("delete_pod", {"min_healthy": 2, "grace_period_seconds": -1},
               path="policies[0].actions[1].params")
    assert err.value.messages == [
        "policies[0].actions[1].params.min_healthy: unknown key (known: grace_period_seconds, "
        "min_healthy_replicas)",
        "policies[0].actions[1].params.grace_period_seconds: must be >= 0, got -1",
    ]
    with pytest.raises(ConfigError, match=r"p.signal: expected one of 'SIGKILL', 'SIGTERM'"):
        params("kill_process", {"signal": "SIGHUP"}, path="p")
    with pytest.raises(ConfigError, match=r"p.labels: give labels or annotations"):
        params("label_pod", {}, path="p")
    with pytest.raises(ConfigError, match=r"p.labels.bad key: 'bad key' is not a valid label key"):
        params("label_pod", {"labels": {"bad key": "x"}}, path="p")
    with pytest.raises(ConfigError, match=r"p.labels.ok: 'no spaces' is not a valid label value"):
        params("label_pod", {"labels": {"ok": "no spaces"}}, path="p")
    with pytest.raises(ConfigError, match=r"unknown action 'reboot_node' \(known: block_peer"):
        action_class("reboot_node")


def test_errors_in_a_policy_file_name_the_line() -> None:
    doc = load_yaml("allow_egress:\n  - cidr: 10.0.0.0/8\n    ports: [53]\n  - cidr: nonsense\n"
                    "    ports: [70000]\n", "policy.yaml")
    with pytest.raises(ConfigError) as err:
        params("isolate_pod", doc, path="actions[0].params", source="policy.yaml")
    assert err.value.messages == [
        "policy.yaml:4: actions[0].params.allow_egress[1].cidr: 'nonsense' is not a CIDR "
        "(e.g. 10.0.0.0/8)",
        "policy.yaml:5: actions[0].params.allow_egress[1].ports[0]: must be 1-65535, got 70000",
    ]
    ok = params("isolate_pod", {"allow_egress": [{"cidr": "10.0.0.0/8", "ports": [53],
                                                  "protocol": "UDP"}]})
    assert ok.allow_egress[0].ports == (53,) and ok.allow_egress[0].protocol == "UDP"


def test_plan_refuses_bad_params_as_an_action_error() -> None:
    from otelguard.response.actions.base import Target
    from otelguard.response.actions.node import FreezeContainer

    with pytest.raises(ActionError, match=r"freeze_container.params.timeout_seconds: must be > 0"):
        FreezeContainer().plan(Target(container_id="x"), {"timeout_seconds": 0})
