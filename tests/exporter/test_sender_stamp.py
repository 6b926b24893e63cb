"""The agent's builder stamps every Resource of logs and spans with its node's MAC
(exporter.identity), and the stamp is the one the processor's NodeTokens accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from otelguard import semconv as sc
from otelguard.agent import AgentConfig
from otelguard.config import from_mapping
from otelguard.exporter.builder import OtlpBuilder, signer_for
from otelguard.exporter.settings import NodeIdentity
from otelguard.otlp.messages import attrs_dict
from otelguard.transport.identity import NodeTokens

from tests.exporter.scenario import shell_session

NODE = NodeIdentity("node-a", "host-a", "")


def _verifies(tokens: NodeTokens, res: dict[str, Any]) -> bool:
    return tokens.verify(res[sc.SENDER_NODE], res.get(sc.CONTAINER_ID, ""),
                         res.get(sc.K8S_POD_UID, ""), res[sc.HOST_NAME], res[sc.SENDER_NONCE],
                         res[sc.SENDER_MAC])


def test_logs_and_spans_resources_are_stamped(tmp_path: Path) -> None:
    (tmp_path / "node-a").write_text("token-a\n")
    cfg = from_mapping(AgentConfig, {"exporter": {"identity": {
        "node_token_file": str(tmp_path / "{node}")}}})
    signer = signer_for(cfg.exporter.identity, NODE)
    assert signer is not None
    builder = OtlpBuilder(NODE, signer=signer)
    logs = builder.logs(shell_session())
    traces = builder.shutdown_traces()
    assert traces is not None
    tokens_file = tmp_path / "node-tokens"
    tokens_file.write_text("node-a token-a\n")
    tokens = NodeTokens(str(tokens_file), 3600)
    resources = [attrs_dict(rl.resource.attributes) for rl in logs.resource_logs] + \
                [attrs_dict(rs.resource.attributes) for rs in traces.resource_spans]
    assert len(resources) >= 4
    assert all(_verifies(tokens, r) for r in resources)
    nonces = {r[sc.SENDER_NONCE] for r in resources}
    assert len(nonces) == 2  # one per request: the logs and the traces
    # another request: another nonce, so another MAC for the same Resource
    again = attrs_dict(builder.logs(shell_session()).resource_logs[0].resource.attributes)
    assert again[sc.SENDER_NONCE] not in nonces and _verifies(tokens, again)


def test_without_a_token_file_nothing_is_stamped() -> None:
    assert signer_for(from_mapping(AgentConfig, {}).exporter.identity, NODE) is None
    logs = OtlpBuilder(NODE).logs(shell_session())
    assert all(sc.SENDER_MAC not in attrs_dict(rl.resource.attributes)
               for rl in logs.resource_logs)
