"""Response policies: loaded like rules (every problem at once, file:line), matched as
documented (docs/response.md#policies)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from otelguard.config import ConfigError
from otelguard.response.policy import Facts, load_policies, parse_policies

GOOD = textwrap.dedent("""\
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: isolate-shadow}
    spec:
      mode: approve
      ttl: 1h
      match:
        rules: ["Read sensitive file*"]
        priority: WARNING
        namespaces: ["shop*"]
        pod_labels: {app: web}
      actions:
        - action: label_pod
          params: {labels: {quarantine: "true"}}
        - action: isolate_pod
          ignore_errors: true
    ---
    apiVersion: otelguard.dev/v1alpha1
    kind: ResponsePolicy
    metadata: {name: incidents-critical}
    spec:
      continue: true
      match: {source: incident, incident_severity: CRITICAL, techniques: [T1059]}
      actions: [{action: freeze_container}]
    """)


def test_a_good_file_loads_in_order_with_defaults_and_revisions(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(GOOD)
    ps = load_policies([f])
    assert [p.name for p in ps.policies] == ["isolate-shadow", "incidents-critical"]
    first, second = ps.policies
    assert first.mode == "approve" and first.spec.ttl_seconds == 3600
    assert second.mode == "advise" and second.spec.continue_ is True
    assert first.spec.expire_seconds == 900 and first.spec.max_per_hour == 10
    assert first.spec.protected() == ("kube-system", "otelguard")
    assert len(first.revision) == 12 and first.revision != second.revision
    assert first.source == f"{f}:1"
    # an edit changes the revision; reformatting does not
    f.write_text(GOOD.replace("ttl: 1h", "ttl: 2h"))
    assert load_policies([f]).policies[0].revision != first.revision
    f.write_text(GOOD.replace("metadata: {name: isolate-shadow}",
                              "metadata:\n  name: isolate-shadow"))
    assert load_policies([f]).policies[0].revision == first.revision


def test_every_problem_is_reported_at_once_with_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent("""\
        apiVersion: otelguard.dev/v1alpha1
        kind: ResponsePolicy
        metadata: {name: one}
        spec:
          mode: yolo
          colour: red
          ttl: soon
          match:
            source: incident
            rules: [x]
          actions:
            - action: label_pod
              params: {labels: {"bad key!": x}, colour: red}
            - action: nuke
              parms: {}
        ---
        apiVersion: otelguard.dev/v1alpha1
        kind: ResponsePolicy
        metadata: {name: one}
        spec:
          continue: maybe
          match: {}
          actions: []
        """))
    with pytest.raises(ConfigError) as err:
        load_policies([bad])
    got = err.value.messages
    f = str(bad)
    expected = [
        f"{f}:5: [0].spec.mode: expected one of 'advise', 'approve', 'auto', got str 'yolo'",
        f"{f}:6: [0].spec.colour: unknown key",
        f"{f}:10: [0].spec.match.rules: applies to detections only (source: incident)",
        f"{f}:13: [0].spec.actions[0].params.colour: unknown key (known: annotations, labels)",
        f"{f}:13: [0].spec.actions[0].params.labels.bad key!: 'bad key!' is not a valid label",
        f"{f}:14: [0].spec.actions[1].action: unknown action 'nuke' (known: block_peer, ",
        f"{f}:15: [0].spec.actions[1].parms: unknown key",
        f"{f}:23: [1].spec.actions: must name at least one action",
        f"{f}:21: [1].spec.continue: expected a boolean, got str 'maybe'",
    ]
    for want in expected:
        assert any(m.startswith(want) for m in got), (want, got)
    assert len(got) == 9, got
    assert [int(m.split(':')[1]) for m in got] == sorted(int(m.split(':')[1]) for m in got)
    # value checks of a spec (ttl) are reported once its structure builds
    bad.write_text(bad.read_text().replace("      parms: {}\n", "").replace(
        "  mode: yolo\n  colour: red\n", "").replace("continue: maybe", "continue: true")
        .replace("    source: incident\n", ""))
    with pytest.raises(ConfigError) as err:
        load_policies([bad])
    got = err.value.messages
    assert f"{f}:5: [0].spec.ttl: expected a duration such as 300s, 90m, 24h or 2d, got 'soon'" in got, got
    assert any(m.startswith(f"{f}:11: [0].spec.actions[1].action: unknown action 'nuke'")
               for m in got), got
    assert f"{f}:10: [0].spec.actions[0].params.labels.bad key!: 'bad key!' is not a valid " \
           f"label key" in got, got
    assert any(m.startswith(f"{f}:19: [1].spec.actions: must name at least one action")
               for m in got), got
    assert len(got) == 5, got  # + params.colour


def test_duplicate_names_across_files_and_a_yaml_error(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.split("---")[0])
    (tmp_path / "c.yaml").write_text("spec: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_policies([tmp_path])
    got = err.value.messages
    assert any(m.startswith(f"{tmp_path / 'b.yaml'}:1: metadata.name: duplicate policy name "
                            f"'isolate-shadow' (first at {tmp_path / 'a.yaml'}:1)") for m in got), got
    assert any(m.startswith(f"{tmp_path / 'c.yaml'}:") and "invalid YAML" in m for m in got), got


def test_matching() -> None:
    ps_list = parse_policies(GOOD, "mem")
    from otelguard.response.policy import PolicySet
    ps = PolicySet(tuple(ps_list))
    hit = Facts("detection", rule="Read sensitive file untrusted", priority="ERROR",
                namespace="shop", pod_labels={"app": "web", "team": "a"})
    assert [p.name for p in ps.matching(hit)] == ["isolate-shadow"]
    for miss in (Facts("detection", rule="Read sensitive file untrusted", priority="NOTICE",
                       namespace="shop", pod_labels={"app": "web"}),
                 Facts("detection", rule="Other", priority="ERROR", namespace="shop",
                       pod_labels={"app": "web"}),
                 Facts("detection", rule="Read sensitive file untrusted", priority="ERROR",
                       namespace="default", pod_labels={"app": "web"}),
                 Facts("detection", rule="Read sensitive file untrusted", priority="ERROR",
                       namespace="shop", pod_labels={"app": "db"})):
        assert ps.matching(miss) == [], miss
    inc = Facts("incident", incident_severity="CRITICAL", techniques=("T1059.004", "T1555"))
    assert [p.name for p in ps.matching(inc)] == ["incidents-critical"]
    assert ps.matching(Facts("incident", incident_severity="ERROR",
                             techniques=("T1059.004",))) == []
    assert ps.matching(Facts("incident", incident_severity="CRITICAL",
                             techniques=("T1105",))) == []
