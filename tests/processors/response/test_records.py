"""Where a detection's target is: the node comes from the pod, else from the verified sender."""

from __future__ import annotations

from otelguard import semconv as S
from otelguard.processors.response.records import target_of

POD = {S.K8S_NAMESPACE_NAME: "shop", S.K8S_POD_NAME: "web-1", S.CONTAINER_ID: "c" * 64}


def test_the_node_is_the_pods_then_the_verified_senders_then_the_hosts() -> None:
    sender = {S.SENDER_NODE: "n2", S.SENDER_VERIFIED: True, S.HOST_NAME: "agent-pod-x"}
    assert target_of({**POD, S.K8S_NODE_NAME: "n1", **sender}, {}).node == "n1"
    assert target_of({**POD, **sender}, {}).node == "n2"
    # an unverified claim is not taken: the host name, or nothing
    assert target_of({**POD, **sender, S.SENDER_VERIFIED: False}, {}).node == "agent-pod-x"
    assert target_of({**POD, S.SENDER_NODE: "n2"}, {}).node is None


def test_the_target_carries_the_process_creation_time() -> None:
    t = target_of(POD, {S.PROCESS_PID: 42, S.PROCESS_CREATION_TIME: "2026-11-23T12:55:13.123456Z"})
    assert (t.pid, t.process_creation_time) == (42, "2026-11-23T12:55:13.123456Z")
    assert target_of(POD, {S.PROCESS_PID: 42}).process_creation_time is None
