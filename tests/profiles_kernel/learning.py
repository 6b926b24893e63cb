"""The learning window of the shop (workloads.py) and the review that approves it.

Two passes of every replica of every workload, one bucket apart; inside them the attacker's
steps (test_poisoning.py asserts what each achieved):

- ``web-poisoned``: one replica calls a C2 peer in both buckets (k-of-n); both replicas look a
  name up in the first bucket only (one bucket); both replicas, in both buckets, do what must
  never auto-learn (a shell, curl, a write under /etc, CAP_SYS_ADMIN, the token read);
- ``web-tainted``: both replicas, both buckets, read /etc/shadow (a WARNING rule hit) and then
  call a C2 peer from the same process;
- ``web-flooded``: one replica writes ``JUNK`` distinct files in the first bucket.

Then the window closes, the stage's sync thread ends it, and a reviewer approves each file
(``otelguard profile approve``); the tainted one only after promoting what passed the evidence
bar in it (``--accept-taint``), as docs/profiles.md#review describes.
"""

from __future__ import annotations

import dataclasses

from otelguard.processors.profiles.document import dump, load, spec_of
from otelguard.processors.profiles.model import TAINTED_REASON
from tests.profiles_kernel.workloads import Shop

RISKY_STEPS = ("shell", "network_tool", "write_etc", "cap_sys_admin", "sa_token_read")


def plan(name: str, replica: int, bucket: int) -> list[str]:
    steps: list[str] = []
    if name == "web-poisoned":
        if replica == 0:
            steps.append("c2_kofn")
        if bucket == 0:
            steps.append("dns_burst")
        steps.extend(RISKY_STEPS)
    elif name == "web-tainted":
        steps.append("taint_then_c2")
    elif name == "web-flooded" and replica == 0 and bucket == 0:
        steps.append("junk_flood")
    return steps


def learn_and_approve(shop: Shop) -> None:
    bucket_s = shop.profiles.config.bucket_seconds
    for bucket in range(2):
        for name, replicas in shop.replicas.items():
            for i, r in enumerate(replicas):
                run = shop.run(r, plan(name, i, bucket))
                assert run.returncode == 0, (name, run.stderr)
                shop.learning_runs.append(run)
        shop.clock.offset += bucket_s
    shop.learning_losses = shop.live.lost_since_start()
    workloads = sorted({r.workload for r in shop.all_replicas()})
    shop.clock.offset += shop.profiles.config.learn_seconds
    shop.wait_state(workloads, ("learned", "tainted"))
    shop.wait_files(workloads, ("learned", "tainted"))
    for w in workloads:
        path = shop.file_of(w)
        doc = load(path)
        if doc.status.state == "tainted":
            # the reviewer read the taints: the rule hit was the attacker's process, whose
            # records were not learned from; what passed the bar otherwise is promoted
            passed = [q for q in doc.status.quarantine if q.reason == TAINTED_REASON]
            values: dict[str, list[str]] = {}
            for q in passed:
                values.setdefault(q.kind, []).append(q.value)
            try:
                shop.approve(w)
            except ValueError as exc:
                shop.refused[w] = str(exc)
            path.write_text(dump(dataclasses.replace(doc, spec=spec_of(values))))
            shop.approve(w, accept_taint=True)
        else:
            shop.approve(w)
    shop.wait_state(workloads, ("approved",))
    shop.clock.offset += bucket_s  # the held-out period starts
