"""What sender identity costs per record, on both sides, measured in the same run.

- agent: ``OtlpBuilder.logs_bytes`` of 512-event batches (8 containers + host, ~33 attributes
  per record, bench/exporter_build.py's mix) without a signer (baseline) and with one: one
  nonce per request, one HMAC-SHA256 per Resource, the Resource encoded per request;
- processor: parsing the same request (upb, the receiver's first step; baseline) and
  ``SenderCheck.apply`` on parsed copies (one attribute scan + one HMAC per Resource, MAC stripped).

Prints µs per record and the ratios. Run: ``.venv/bin/python -m bench.sender_identity``
(``--batches N``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from bench.exporter_build import NODE, make_events
from otelguard.exporter.builder import OtlpBuilder
from otelguard.processors.config import IdentitySection
from otelguard.processors.receiver.identity import SenderCheck
from otelguard.transport.identity import ResourceSigner

BATCH = 512


def per_record(fn: Callable[[], object], batches: int) -> float:
    fn()  # warm caches
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    return (time.perf_counter() - t0) / (batches * BATCH) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, default=400)
    args = ap.parse_args()
    events = make_events(BATCH, process_part=True)
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp) / "token"
        token.write_text("t" * 64 + "\n")
        tokens = Path(tmp) / "node-tokens"
        tokens.write_text(f"{NODE.node_name} {'t' * 64}\n")
        plain = OtlpBuilder(NODE)
        signed = OtlpBuilder(NODE, signer=ResourceSigner(NODE.node_name, str(token)))
        build_plain = per_record(lambda: plain.logs_bytes(events), args.batches)
        build_signed = per_record(lambda: signed.logs_bytes(events), args.batches)

        raw = signed.logs_bytes(events)
        check = SenderCheck(IdentitySection(node_token_file=str(tokens)))

        def parse() -> ExportLogsServiceRequest:
            req = ExportLogsServiceRequest()
            req.ParseFromString(raw)
            return req

        parsed = [parse() for _ in range(args.batches + 1)]
        pending = iter(parsed)

        def check_only() -> None:
            req = next(pending)
            assert check.apply(req).verified == len(req.resource_logs)

        recv_plain = per_record(parse, args.batches)
        recv_check = per_record(check_only, args.batches)
    resources = len(parse().resource_logs)
    print(f"{BATCH} records, {resources} Resources per request, {args.batches} requests")
    print(f"agent build      : {build_plain:6.2f} µs/record unsigned, {build_signed:6.2f} signed "
          f"(x{build_signed / build_plain:.3f})")
    print(f"processor receive: {recv_plain:6.2f} µs/record parse, +{recv_check:5.2f} check "
          f"(x{(recv_plain + recv_check) / recv_plain:.3f}); check "
          f"{recv_check * BATCH / resources:.1f} µs/Resource")


if __name__ == "__main__":
    main()
