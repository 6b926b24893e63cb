"""Live reload of rules and pipeline config (docs/architecture.md#live-reload), the way an
operator meets it: a real `otelguard processor` on loopback, OTLP/gRPC requests flowing while a
ConfigMap-shaped rules directory is swapped underneath (the kubelet's ``..data`` symlink
rename), SIGHUP, broken files that must keep the old rules running, and the same for
`otelguard run`'s in-process pipeline. Every event sent is counted out again: none lost, none
processed twice, and each request judged by exactly one rule set."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otelguard import semconv as S
from otelguard.otlp import jsoncodec
from otelguard.otlp.messages import attrs_dict, iter_log_records, set_attrs

from tests.support.configmap import ConfigMapDir
from tests.support.endpoints import free_port, grpc_call, listening
from tests.support.health import http_get_json
from tests.support.metrics import sample, scrape, series, total
from tests.support.polling import wait_for

OTELGUARD = [sys.executable, "-m", "otelguard.cli"]
PER_REQUEST = 4


def _rule(name: str, condition: str) -> str:
    return (f"- rule: {name}\n  desc: reload test\n  condition: {condition}\n"
            f"  output: {name} %proc.cmdline\n  priority: WARNING\n")


RULE_A = _rule("Reload A", "evt.type = execve and proc.exepath = /bin/sh")
RULE_B = _rule("Reload B", "evt.type = execve and proc.cmdline contains reloadmark")
RULE_C = _rule("Reload C", "evt.type = execve and proc.cmdline contains reloadmark")
# line 3 names a macro that no file defines: the whole set must be refused
BROKEN = _rule("Reload broken", "proc.exepath = /bin/sh and no_such_macro")


def _request(seq: int) -> ExportLogsServiceRequest:
    """PER_REQUEST exec events, uids ``r<seq>-<i>``: every rule above matches each of them."""
    req = ExportLogsServiceRequest()
    rl = req.resource_logs.add()
    set_attrs(rl.resource.attributes, {S.CONTAINER_ID: "c" * 64, S.HOST_NAME: "node-1"})
    sl = rl.scope_logs.add()
    for i in range(PER_REQUEST):
        rec = sl.log_records.add()
        rec.event_name = S.EV_PROCESS_EXEC
        rec.time_unix_nano = 1_763_900_000_000_000_000 + seq * 1000 + i
        rec.severity_number = 9
        set_attrs(rec.attributes, {
            S.PROCESS_PID: 1000 + i, S.PROCESS_EXECUTABLE_PATH: "/bin/sh",
            S.PROCESS_COMMAND_LINE: f"sh -c reloadmark {seq}", S.LOG_RECORD_UID: f"r{seq}-{i}",
        })
    return req


def _reconcile(batches: list[ExportLogsServiceRequest], sent: int) -> list[str]:
    """Every event of ``sent`` requests left exactly once with exactly one detection, all of a
    request's detections come from one rule set; returns the rule per request, in order."""
    events: Counter[str] = Counter()
    rule_of: dict[str, list[str]] = {}
    for batch in batches:
        for _res, _scope, rec in iter_log_records(batch):
            a = attrs_dict(rec.attributes)
            if rec.event_name == S.EV_INCIDENT:
                continue  # otelguard run's incidents stage tells the detections' stories
            if rec.event_name == S.EV_DETECTION:
                rule_of.setdefault(str(a[S.TRIGGER_RECORD_UID]), []).append(
                    str(a[S.SECURITY_RULE_NAME]))
            else:
                events[str(a[S.LOG_RECORD_UID])] += 1
    want = {f"r{s}-{i}" for s in range(sent) for i in range(PER_REQUEST)}
    assert set(events) == want and set(events.values()) == {1}, "lost or duplicated events"
    assert set(rule_of) == want and all(len(r) == 1 for r in rule_of.values()), rule_of
    per_request = []
    for s in range(sent):
        rules = {rule_of[f"r{s}-{i}"][0] for i in range(PER_REQUEST)}
        assert len(rules) == 1, f"request {s} was judged by two rule sets: {rules}"
        per_request.append(rules.pop())
    return per_request


def _runs(rules: list[str]) -> list[str]:
    """``[A, A, B, B, C]`` -> ``[A, B, C]``: the rule sets in the order they took effect."""
    return [r for i, r in enumerate(rules) if i == 0 or rules[i - 1] != r]


def _read_jsonl(path: Path) -> list[ExportLogsServiceRequest]:
    out = []
    for line in path.read_text().splitlines():
        batch = jsoncodec.decode_line(line)
        if isinstance(batch, ExportLogsServiceRequest):
            out.append(batch)
    return out


class Processor:
    """A real ``otelguard processor`` process on loopback, writing what it forwards to JSONL."""

    def __init__(self, tmp: Path, config: Path) -> None:
        self.grpc_port, self.metrics_port = free_port(), free_port()
        self.out = tmp / "out.jsonl"
        self.log_path = tmp / "processor.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            OTELGUARD + ["processor", "--insecure", "--config", str(config),
                         "--listen", f"127.0.0.1:{self.grpc_port}", "--export",
                         f"jsonl:{self.out}", "--metrics", f"127.0.0.1:{self.metrics_port}"],
            stdout=self._log, stderr=self._log, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.sent = 0
        wait_for(lambda: listening(self.grpc_port) or self.proc.poll() is not None,
                 timeout=60, what="otelguard processor listening")
        assert self.proc.poll() is None, self.log_path.read_text()

    def send(self, n: int = 1) -> None:
        for _ in range(n):
            code, detail, _ = grpc_call(f"127.0.0.1:{self.grpc_port}",
                                        _request(self.sent).SerializeToString())
            assert code == grpc.StatusCode.OK, detail
            self.sent += 1

    def metric(self, name: str, **labels: str) -> float:
        return sample(name, scrape(f"http://127.0.0.1:{self.metrics_port}/metrics"), **labels)

    def send_until(self, what: str, check: Callable[[], bool]) -> None:
        """Keep events flowing, one request at a time, until ``check`` holds."""
        def step() -> bool:
            self.send()
            return check()
        wait_for(step, timeout=30, what=what, interval=0.05)

    def detections(self, rule: str) -> float:
        return total("otelguard_detections_total",
                     scrape(f"http://127.0.0.1:{self.metrics_port}/metrics"), rule=rule)

    def reloads(self, component: str, result: str) -> float:
        return self.metric("otelguard_config_reloads_total", component=component, result=result)

    def stop(self) -> list[str]:
        """SIGTERM (flush, exit 0); then reconcile what was forwarded."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(30) == 0, self.log_path.read_text()[-3000:]
        self._log.close()
        return _reconcile(_read_jsonl(self.out), self.sent)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


@contextlib.contextmanager
def processor(tmp: Path, config: Path) -> Iterator[Processor]:
    p = Processor(tmp, config)
    try:
        yield p
    finally:
        p.kill()


def _rules_dir_config(tmp: Path, name: str, interval: float) -> tuple[ConfigMapDir, Path]:
    """A ConfigMap-shaped rules directory holding RULE_A and a config file whose falco_rules
    stage reads it, polled every ``interval`` seconds (the same file shape for both commands)."""
    rules = ConfigMapDir(tmp / "rules", {"rules.yaml": RULE_A})
    config = tmp / name
    config.write_text(f"reload: {{watch_interval_seconds: {interval}}}\n"
                      "processors:\n"
                      "  - type: falco_rules\n"
                      f"    config: {{rules: [{rules.path}]}}\n")
    return rules, config


def _readyz_reload(port: int) -> tuple[int, dict[str, object], str]:
    status, body = http_get_json(port, "/readyz")
    detail = {c["name"]: c["detail"] for c in body["checks"]}["reload"]
    return status, body, detail


def test_configmap_rules_swap_under_load_broken_then_fixed(tmp_path: Path) -> None:
    rules, config = _rules_dir_config(tmp_path, "pipeline.yaml", 0.2)
    with processor(tmp_path, config) as p:
        p.send(5)
        assert p.detections("Reload A") == 5 * PER_REQUEST
        revision_a = {s["revision"] for s, v in series(
            "otelguard_rules_loaded", scrape(f"http://127.0.0.1:{p.metrics_port}/metrics"))}
        # a new rule fires, the removed one stops: the next requests after the swap
        rules.update({"rules.yaml": RULE_B})
        p.send_until("Reload B to fire", lambda: p.detections("Reload B") > 0)
        p.send(5)
        assert p.reloads("config", "success") == 1 and p.reloads("rules", "success") == 1
        loaded = series("otelguard_rules_loaded",
                        scrape(f"http://127.0.0.1:{p.metrics_port}/metrics"))
        assert [(s["stage"], v) for s, v in loaded] == [("falco_rules", 1.0)]
        assert {s["revision"] for s, _ in loaded}.isdisjoint(revision_a)

        # a macro that does not resolve: refused whole, B keeps running, one clear error
        rules.update({"rules.yaml": BROKEN})
        p.send_until("the failed reload to be counted",
                     lambda: p.reloads("rules", "failure") == 1)
        b_before = p.detections("Reload B")
        p.send(5)
        assert p.detections("Reload B") == b_before + 5 * PER_REQUEST
        assert p.detections("Reload broken") == 0
        status, body, detail = _readyz_reload(p.metrics_port)
        assert status == 200 and body["warnings"] == ["reload"], body
        assert "LAST RELOAD FAILED" in detail and "undefined macro 'no_such_macro'" in detail
        assert f"{rules.path}/rules.yaml:1" in detail, detail
        log = p.log_path.read_text()
        assert log.count("reload (files changed) failed") == 1, log  # once, not every poll
        assert f"{rules.path}/rules.yaml:1: rule 'Reload broken': undefined macro" in log
        # doctor shows the same, from the processor's readiness answer
        doc = subprocess.run(OTELGUARD + ["doctor", "--processor",
                                          f"http://127.0.0.1:{p.metrics_port}"],
                             capture_output=True, text=True, timeout=120)
        lines = [ln for ln in doc.stdout.splitlines() if ln.startswith("WARN processor reload:")]
        assert len(lines) == 1 and "LAST RELOAD FAILED" in lines[0], doc.stdout
        assert f"{rules.path}/rules.yaml:1" in lines[0], doc.stdout

        # fixed: the next version loads
        rules.update({"rules.yaml": RULE_C})
        p.send_until("Reload C to fire", lambda: p.detections("Reload C") > 0)
        p.send(3)
        assert p.reloads("rules", "success") == 2 and p.reloads("rules", "failure") == 1
        status, body, detail = _readyz_reload(p.metrics_port)
        assert status == 200 and body["warnings"] == [] and "FAILED" not in detail, body
        ts = p.metric("otelguard_config_last_reload_success_timestamp_seconds",
                      component="rules")
        assert ts > 0
        per_request = p.stop()
    assert _runs(per_request) == ["Reload A", "Reload B", "Reload C"], per_request


def test_sighup_reloads_rules_and_config_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULE_A)
    config = tmp_path / "pipeline.yaml"
    body = ("reload: {{watch_interval_seconds: 0}}\n"  # no polling: only SIGHUP reloads
            "{service}"
            "processors:\n"
            "  - type: falco_rules\n"
            f"    config: {{{{rules: [{rules_file}], disabled_rules: [{{disabled}}]}}}}\n")
    config.write_text(body.format(service="", disabled=""))
    with processor(tmp_path, config) as p:
        p.send(3)
        rules_file.write_text(RULE_A + RULE_B)
        p.send(3)  # no polling: still only A
        assert p.detections("Reload B") == 0 and p.reloads("config", "success") == 0
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: p.reloads("config", "success") == 1, timeout=30, what="SIGHUP reload")
        p.send(3)  # A and B both match now: one detection each per event
        assert p.detections("Reload B") == 3 * PER_REQUEST
        # the config file itself: disable A (live) and change a listener limit (restart only)
        config.write_text(body.format(service="service: {max_json_depth: 16}\n",
                                      disabled="Reload A"))
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: p.reloads("config", "success") == 2, timeout=30, what="second SIGHUP")
        a_before = p.detections("Reload A")
        p.send(3)
        assert p.detections("Reload A") == a_before
        status, ready, detail = _readyz_reload(p.metrics_port)
        assert status == 200 and ready["warnings"] == ["reload"], ready
        assert "needs restart for: service.max_json_depth" in detail, detail
        assert "service.max_json_depth" in p.log_path.read_text()
        # an unknown key: the whole file is refused, the running pipeline stays as it was
        config.write_text("bogus: 1\n" + config.read_text())
        p.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: p.reloads("config", "failure") == 1, timeout=30, what="refused file")
        p.send(3)
        assert p.detections("Reload A") == a_before
        status, ready, detail = _readyz_reload(p.metrics_port)
        assert status == 200 and "LAST RELOAD FAILED" in detail, ready
        assert f"{config}:1: bogus: unknown key" in detail, detail
        p.proc.send_signal(signal.SIGTERM)
        assert p.proc.wait(30) == 0
    batches = _read_jsonl(p.out)
    rules = [str(attrs_dict(rec.attributes)[S.SECURITY_RULE_NAME]) for b in batches
             for _r, _s, rec in iter_log_records(b) if rec.event_name == S.EV_DETECTION]
    # 6 requests under A, 3 under A+B, 6 under B only; every event exactly once
    assert Counter(rules) == {"Reload A": 9 * PER_REQUEST, "Reload B": 9 * PER_REQUEST}
    uids = Counter(str(attrs_dict(rec.attributes)[S.LOG_RECORD_UID]) for b in batches
                   for _r, _s, rec in iter_log_records(b) if rec.event_name != S.EV_DETECTION)
    assert len(uids) == 15 * PER_REQUEST and set(uids.values()) == {1}


def test_otelguard_run_pipeline_reloads_rules_while_the_export_thread_sends(
        tmp_path: Path) -> None:
    """``otelguard run``'s in-process path (runner.PipelineSink and runner.build_reloader, what
    its main() builds around the sensor) under a sending thread."""
    from otelguard.runner import PipelineSink, build_pipeline, build_reloader, load_run_config
    from otelguard.transport.delivery import Delivery
    from otelguard.transport.memory import InMemoryTransport

    rules, config = _rules_dir_config(tmp_path, "run.yaml", 0.1)
    args = argparse.Namespace(config=str(config), rules=None)
    cfg = load_run_config(args.config)
    pipeline = build_pipeline(cfg.processors, args.rules)
    pipeline.start()
    out = InMemoryTransport()
    sink = PipelineSink(pipeline, [Delivery(out, None, stage="output")])
    reloader = build_reloader(pipeline, cfg, args).start()
    sent = 0
    stop = threading.Event()

    def export_thread() -> None:
        nonlocal sent
        while not stop.is_set():
            assert sink.send_logs(_request(sent).SerializeToString(), PER_REQUEST)
            sent += 1

    def rules_seen() -> set[str]:
        return {str(attrs_dict(rec.attributes)[S.SECURITY_RULE_NAME]) for b in list(out.logs)
                for _r, _s, rec in iter_log_records(b) if rec.event_name == S.EV_DETECTION}

    sender = threading.Thread(target=export_thread)
    sender.start()
    try:
        wait_for(lambda: "Reload A" in rules_seen(), what="Reload A")
        rules.update({"rules.yaml": RULE_B})
        wait_for(lambda: "Reload B" in rules_seen(), what="Reload B after the swap")
        rules.update({"rules.yaml": BROKEN})
        wait_for(lambda: reloader.last_failure is not None, what="the failed reload")
        assert reloader.check().warn and "no_such_macro" in reloader.check().detail
        at_failure = sent
        wait_for(lambda: sent > at_failure + 20, what="more batches after the failure")
        rules.update({"rules.yaml": RULE_C})
        wait_for(lambda: "Reload C" in rules_seen(), what="Reload C after the fix")
    finally:
        stop.set()
        sender.join(30)
        reloader.stop()
    sink.shutdown()
    per_request = _reconcile(list(out.logs), sent)
    assert _runs(per_request) == ["Reload A", "Reload B", "Reload C"], _runs(per_request)
    assert reloader.reloads == 2
