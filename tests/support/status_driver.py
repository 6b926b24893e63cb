"""A stand-in for ``otelguard run``'s output side, run as its own process by tests/test_status.py
on a real pseudo-terminal or a pipe: the console output and the status line exactly as the
runner builds them (``runner.status_line``), fed through otelguard's real counters, with
detections, a raw event and a log line arriving while the status is shown.

``python -m tests.support.status_driver MODE INTERVAL`` writes to its stdout/stderr, then
``SUMMARY`` on stderr after the status stopped (as the exit summary follows it)."""

from __future__ import annotations

import logging
import sys
import time

from otelguard import semconv as S
from otelguard import telemetry
from otelguard.processors.incidents import metrics as incident_metrics
from otelguard.runner import status_line
from otelguard.transport.console import ConsoleTransport
from tests.support.incidents import batch, detection, event, pod, trace

RULE = "Read sensitive file untrusted"


def main() -> None:
    mode, interval = sys.argv[1], float(sys.argv[2])
    telemetry.configure_logging("otelguard-run", "warning")
    console = ConsoleTransport(sys.stdout, detections_only=True)
    status = status_line(mode, interval, [console])
    if status is not None:  # --status off
        status.start()
    telemetry.events.labels(S.EV_FILE_OPEN).inc(1000)
    time.sleep(interval * 2.5)
    raw = event(S.EV_FILE_OPEN, 201, trace("t"), attrs={S.FILE_PATH: "/etc/shadow"})
    det = detection(raw, RULE, 21, "credential_access", "T1555")
    telemetry.detections.labels(RULE, "CRITICAL", "credential_access", "shop", "web").inc()
    telemetry.dropped.labels("user_queue", "full").inc(7)
    incident_metrics.records.labels("opened").inc()
    assert console.export_logs(batch(pod(), [raw], [det])).ok  # the raw event is not printed
    time.sleep(interval * 2.5)
    logging.getLogger("otelguard.run").warning("a warning while the status is shown")
    time.sleep(interval * 2.5)
    if status is not None:
        status.stop()
    sys.stdout.flush()
    print("SUMMARY", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
