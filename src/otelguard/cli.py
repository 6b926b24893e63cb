"""The ``otelguard`` command. Each subcommand lives in its package; this module only parses.

Subcommand modules are imported lazily so ``otelguard rules validate`` never loads BCC and
``otelguard doctor`` never loads gRPC.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import textwrap
from typing import Callable, Optional, Sequence

import otelguard
from otelguard import __version__
from otelguard.telemetry import LOG_FORMATS, LOG_LEVELS

# subcommand -> "module:function"; the function takes the parsed Namespace, returns an exit code
_TARGETS = {
    "run": "otelguard.runner:main",
    "agent": "otelguard.agent:main",
    "doctor": "otelguard.agent:doctor_main",
    "ebpf.render": "otelguard.ebpf.loader:render_main",
    "processor": "otelguard.processors.cli:main",
    "rules.validate": "otelguard.processors.detection.cli:validate_main",
    "rules.list": "otelguard.processors.detection.cli:list_main",
    "policy.validate": "otelguard.processors.policy.cli:validate_main",
    "policy.test": "otelguard.processors.policy.cli:test_main",
    "config.schema": "otelguard.schemas:main",
    "config.reference": "otelguard.reference:main",
    "profile.list": "otelguard.processors.profiles.cli:list_main",
    "profile.show": "otelguard.processors.profiles.cli:show_main",
    "profile.diff": "otelguard.processors.profiles.cli:diff_main",
    "profile.approve": "otelguard.processors.profiles.cli:approve_main",
    "profile.export": "otelguard.processors.profiles.cli:export_main",
    "profile.import": "otelguard.processors.profiles.cli:import_main",
    "profile.install-crd": "otelguard.processors.profiles.cluster_cli:install_crd_main",
    "incidents": "otelguard.processors.incidents.cli:main",
    "respond": "otelguard.processors.response.cli:respond_main",
    "respond.install_crd": "otelguard.processors.response.cli:install_crd_main",
    "audit.verify": "otelguard.processors.response.cli:verify_main",
    "risk.list": "otelguard.processors.risk.cli:list_main",
    "risk.show": "otelguard.processors.risk.cli:show_main",
}


# The exit codes of every command (docs/configuration.md#exit-codes is generated from this).
EXIT_CODES = (
    ("0", "success (a long-running command stopped cleanly: SIGINT/SIGTERM or --duration)"),
    ("1", "a failure at run time (the sensor could not load on this kernel, a check of "
          "`doctor` failed, `rules validate` or `policy validate` found load errors, "
          "`policy test` found missing or unexpected detections, `incidents --id` found none)"),
    ("2", "an operator mistake, reported in one line naming the cause and the fix: a bad flag "
          "or config (every problem listed), a config that cannot be read, not root (no "
          "CAP_BPF/CAP_PERFMON), BCC missing, a port already in use"),
    ("3", "`rules validate`, `policy validate`: the rules load, but some cannot run on this "
          "sensor or were skipped"),
    ("130", "`run`: a second Ctrl-C while the exit summary was being made (what was captured "
            "had been delivered; only the summary is skipped)"),
)


def _target(key: str) -> Callable[[argparse.Namespace], int]:
    module, _, func = _TARGETS[key].partition(":")
    fn: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), func)
    return fn


def _client_tls_flags(parser: argparse.ArgumentParser, prefix: str, section: str,
                      where: str) -> None:
    """``--PREFIX-ca/-cert/-key/-token-file/-insecure``, laid over ``SECTION.tls``
    (:func:`otelguard.transport.security.client_tls_flags`)."""
    for flag, key in (("ca", "ca_file"), ("cert", "cert_file (mTLS)"), ("key", "key_file"),
                      ("token-file", "bearer_token_file")):
        parser.add_argument(f"--{prefix}-{flag}", default=None, metavar="FILE",
                            help=f"{section}.tls.{key}")
    parser.add_argument(f"--{prefix}-insecure", action="store_true",
                        help=f"{section}.tls.insecure: plaintext {where}")


def _logging_flags(parser: argparse.ArgumentParser, level: str) -> None:
    """``--log-level``/``--log-format`` of the long-running commands
    (:func:`otelguard.telemetry.configure_logging`)."""
    parser.add_argument("--log-level", default=level, choices=LOG_LEVELS,
                        help=f"least severe log lines written to stderr (default: {level})")
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                        help="text: one readable line each; json: one JSON object each with "
                        "time, level, logger, message, service, pid (default: text)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="otelguard", description=otelguard.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes:\n" + "\n".join(
            textwrap.fill(text, 90, initial_indent=f"  {code}  ", subsequent_indent="     ")
            for code, text in EXIT_CODES))
    p.add_argument("--version", action="version", version=f"otelguard {__version__}",
                   help="print otelguard's version and exit (BCC and kernel: `otelguard doctor`)")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="single host: agent + processors in one process")
    run.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                     help="stop cleanly after SECONDS")
    run.add_argument(
        "--output", action="append", default=None, metavar="SPEC",
        help="console | jsonl:PATH | otlp:HOST:PORT | otlphttp:URL | falco-json:PATH|- | "
        "falcosidekick:URL, each optionally ?min_priority=P&tags=A,B&exclude_tags=C "
        "(repeatable; default: console and jsonl:otelguard-out.jsonl; docs/falco.md)",
    )
    run.add_argument("--config", default=None, metavar="FILE",
                     help="YAML config file (sensor:, exporter:, processors:, reload:); "
                     "default: /etc/otelguard/otelguard.yaml when it exists")
    run.add_argument("--events", action="store_true",
                     help="console: print every captured event too, not only detections and "
                     "incidents")
    run.add_argument("--status", default="auto", choices=("auto", "live", "plain", "off"),
                     help="the status line (events/s, drops, detections, incidents): live = "
                     "one line refreshed in place under the detections, plain = a `status` "
                     "line every interval, auto (default) = live when the console (else "
                     "stderr) is a terminal, plain otherwise")
    run.add_argument("--status-interval", type=float, default=None, metavar="SECONDS",
                     help="seconds between status updates (default: 1 live, 60 plain)")
    run.add_argument("--rules", action="append", default=None, metavar="FILE",
                     help="Falco-style rules file (repeatable; default: stable ruleset + ours)")
    run.add_argument("--policy", default=None, metavar="DIR",
                     help="run a policy tree as one revision: rules/ and rule exceptions, "
                     "profiles/ and profile exceptions (adds the profiles stage), responses/ "
                     "for a response stage; the revision is stamped on detections, deviations "
                     "and response requests; not with --rules (docs/policy.md)")
    run.add_argument("--metrics", default="127.0.0.1:9464", metavar="HOST:PORT",
                     help="HOST:PORT for /metrics")
    run.add_argument("--profiles", default=None, metavar="DIR",
                     help="behaviour profiles: learn workloads without an approved profile, "
                     "write them under DIR, enforce the approved ones (docs/profiles.md)")
    run.add_argument("--learn-for", default=None, metavar="DURATION",
                     help="with --profiles: learning window (e.g. 24h, 90m, 300s; default 24h)")
    run.add_argument("--no-incidents", action="store_true",
                     help="do not add the incidents stage (detections grouped into incidents "
                     "told as stories, docs/incidents.md) when the pipeline has none")
    _logging_flags(run, "warning")
    run.set_defaults(target="run")

    agent = sub.add_parser("agent", help="node agent: capture and export OTLP/gRPC")
    agent.add_argument("--otlp-endpoint", default=None, metavar="HOST:PORT",
                       help="the next hop's OTLP/gRPC address (the gateway Collector); "
                       "default: OTEL_EXPORTER_OTLP_ENDPOINT")
    _client_tls_flags(agent, "otlp", "exporter", "to the endpoint")
    agent.add_argument("--node-token-file", default=None, metavar="FILE",
                       help="exporter.identity.node_token_file: this node's token ({node}: the "
                       "node name), signs every Resource")
    agent.add_argument("--config", default=None, metavar="FILE",
                       help="YAML config file (sensor:, exporter:)")
    agent.add_argument("--spool-dir", default="/var/lib/otelguard/spool", metavar="DIR",
                       help="requests wait here while the endpoint is down; kept across "
                       "restarts")
    agent.add_argument("--spool-max-bytes", type=int, default=256 * 1024 * 1024,
                       metavar="BYTES", help="spool bound; beyond it requests are dropped and "
                       "counted")
    agent.add_argument("--metrics", default="127.0.0.1:9465", metavar="HOST:PORT",
                       help="HOST:PORT for /metrics, /healthz and /readyz")
    agent.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                       help="stop cleanly after SECONDS")
    agent.add_argument("--respond", action="store_true",
                       help="carry out approved response requests whose node actions target "
                       "this node (ResponseRequest objects; docs/response.md#on-a-cluster)")
    agent.add_argument("--respond-namespace", default=None, metavar="NS",
                       help="with --respond: the requests' namespace (default: the agent's own)")
    agent.add_argument("--respond-state-dir", default="/var/lib/otelguard/response",
                       metavar="DIR", help="with --respond: this node's audit chain (keep it "
                       "across restarts)")
    _logging_flags(agent, "info")
    agent.set_defaults(target="agent")

    doctor = sub.add_parser("doctor", help="check and explain what the agent needs")
    doctor.add_argument("--config", default=None, metavar="FILE",
                        help="the agent's config file: also report plaintext hops")
    doctor.add_argument("--processor", default=None, metavar="URL",
                        help="a processor's metrics address (http://HOST:PORT): also report its "
                        "readiness checks, such as a failed rules reload with file:line")
    doctor.set_defaults(target="doctor")

    ebpf = sub.add_parser("ebpf", help="eBPF tools")
    ebpf_sub = ebpf.add_subparsers(dest="ebpf_command", required=True)
    render = ebpf_sub.add_parser("render", help="print the generated BPF C of a probe")
    render.add_argument("probe", help="process | file | network | privilege | evasion | all")
    render.add_argument("--config", default=None, metavar="FILE",
                        help="agent or run config file whose sensor: section fills the program")
    render.set_defaults(target="ebpf.render")

    proc = sub.add_parser("processor", help="the OTLP processor service")
    proc.add_argument("--listen", default="127.0.0.1:4317", metavar="HOST:PORT",
                      help="OTLP/gRPC listen address")
    proc.add_argument("--listen-http", default=None, metavar="HOST:PORT",
                      help="OTLP/HTTP listen address (protobuf and JSON)")
    proc.add_argument("--export", action="append", default=None, metavar="SPEC",
                      help="otlp:HOST:PORT | otlphttp:URL | jsonl:PATH | falco-json:PATH|- | "
                      "falcosidekick:URL, each optionally ?min_priority=P&tags=A,B "
                      "(repeatable; docs/falco.md)")
    proc.add_argument("--config", default=None, metavar="FILE",
                      help="YAML pipeline file (service:, forward:, exporters:, processors:)")
    proc.add_argument("--rules", action="append", default=None, metavar="FILE",
                      help="Falco-style rules file for falco_rules (repeatable; default: "
                      "stable ruleset + ours)")
    proc.add_argument("--policy", default=None, metavar="DIR",
                      help="run a policy tree as one revision: falco_rules its rules/ and rule "
                      "exceptions, profiles its profiles/ and profile exceptions (stage added), "
                      "a response stage its responses/; stamped on detections, deviations and "
                      "requests; not with --rules (docs/policy.md)")
    proc.add_argument("--metrics", default="127.0.0.1:9466", metavar="HOST:PORT",
                      help="HOST:PORT for /metrics and /readyz")
    proc.add_argument("--tls-cert", default=None, metavar="FILE", help="service.tls.cert_file")
    proc.add_argument("--tls-key", default=None, metavar="FILE", help="service.tls.key_file")
    proc.add_argument("--tls-client-ca", default=None, metavar="FILE",
                      help="service.tls.client_ca_file: require client certificates (mTLS)")
    proc.add_argument("--token-file", default=None, metavar="FILE",
                      help="service.tls.bearer_token_file: accepted tokens, one per line")
    proc.add_argument("--insecure", action="store_true",
                      help="service.tls.insecure: plaintext listeners")
    _client_tls_flags(proc, "export", "forward", "to the next hops")
    _logging_flags(proc, "info")
    proc.set_defaults(target="processor")

    rules = sub.add_parser("rules", help="Falco-style rules")
    rules_sub = rules.add_subparsers(dest="rules_command", required=True)
    validate = rules_sub.add_parser(
        "validate", help="load rules files and report each rule; exit 0: every rule loads and "
        "can run, 1: load errors (the processor would not start), 3: loads, but some rules "
        "cannot run on this sensor or were skipped")
    validate.add_argument("files", nargs="+", metavar="FILE", help="Falco-style rules files")
    validate.add_argument("-p", "--append-output", default="", metavar="FORMAT",
                          help="text with %%fields appended to every rule's output (Falco's -p)")
    validate.set_defaults(target="rules.validate")
    lst = rules_sub.add_parser("list", help="show the active rules")
    lst.add_argument("--rules", action="append", default=None, metavar="FILE",
                     help="rules file (repeatable; default: stable ruleset + ours)")
    lst.set_defaults(target="rules.list")

    _policy_parser(sub)
    _profile_parser(sub)
    _incidents_parser(sub)
    _respond_parser(sub)
    _risk_parser(sub)

    config = sub.add_parser("config", help="config files")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    schema = config_sub.add_parser("schema", help="JSON Schema of a config file kind")
    schema.add_argument("kind", nargs="?", choices=("agent", "run", "pipeline"),
                        help="print this kind's schema to stdout")
    schema.add_argument("--write", default=None, metavar="DIR",
                        help="write every kind's <kind>.schema.json into DIR (docs/config)")
    schema.set_defaults(target="config.schema")
    ref = config_sub.add_parser(
        "reference", help="every flag, environment variable and config key, as Markdown")
    ref.add_argument("--write", default=None, metavar="FILE",
                     help="write it to FILE (docs/configuration.md) instead of stdout")
    ref.add_argument("--repo", default=".", metavar="DIR",
                     help="repository root whose otel-config/ and deploy/ are searched for "
                     "${env:...}")
    ref.set_defaults(target="config.reference")
    return p


def _policy_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    policy = sub.add_parser("policy", help="policy as code: rules, exceptions, profiles and "
                            "responses in one tree (docs/policy.md)")
    verbs = policy.add_subparsers(dest="policy_command", required=True)
    validate = verbs.add_parser(
        "validate", help="check every kind of the tree at once, print its revision; exit "
        "codes as `rules validate` (0 ok, 1 errors, 3 some rules cannot run)")
    validate.add_argument("directory", metavar="DIR", help="the policy tree (rules/, "
                          "exceptions/, profiles/, responses/)")
    validate.set_defaults(target="policy.validate")
    test = verbs.add_parser(
        "test", help="replay a capture through the tree's rules and profiles offline and "
        "print the detections, or check them (exit 1 on a mismatch)")
    test.add_argument("directory", metavar="DIR", help="the policy tree")
    test.add_argument("--replay", required=True, metavar="CAPTURE.jsonl",
                      help="OTLP/JSON lines, as `--output jsonl:PATH` writes them")
    test.add_argument("--expect", default=None, metavar="EXPECTED.yaml",
                      help="the detections that must come out (docs/policy.md#replay-tests)")
    test.set_defaults(target="policy.test")


def _kube_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--kube`` and how to reach the cluster (docs/profiles.md#profiles-in-a-cluster)."""
    parser.add_argument("--kube", action="store_true",
                        help=f"{what} WorkloadProfile objects on the cluster instead of files")
    parser.add_argument("--kubeconfig", default=None, metavar="FILE",
                        help="with --kube: kubeconfig file (default: in-cluster service account, "
                        "else ~/.kube/config)")
    parser.add_argument("--context", default=None, metavar="NAME",
                        help="with --kube: kubeconfig context (default: its current one)")
    parser.add_argument("--namespace", "-n", default="otelguard", metavar="NS",
                        help="with --kube: namespace of the objects (default: otelguard)")


def _profile_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    profile = sub.add_parser("profile", help="behaviour profiles as code (docs/profiles.md)")
    verbs = profile.add_subparsers(dest="profile_command", required=True)
    obj = "[NS/]NAME or a workload key"
    lst = verbs.add_parser("list", help="workload, state, entries, quarantined, tainted")
    lst.add_argument("directory", metavar="DIR", nargs="?", default=None,
                     help="a profiles directory (the stage's `directory`); not with --kube")
    _kube_flags(lst, "list")
    lst.set_defaults(target="profile.list")
    show = verbs.add_parser("show", help="one profile, readable")
    show.add_argument("file", metavar="FILE", help=f"a WorkloadProfile YAML file; with --kube {obj}")
    _kube_flags(show, "show")
    show.set_defaults(target="profile.show")
    diff = verbs.add_parser("diff", help="entries added and removed (for PR review)")
    diff.add_argument("old", metavar="OLD", help=f"the profile file before; with --kube a file or {obj}")
    diff.add_argument("new", metavar="NEW", help=f"the profile file after; with --kube a file or {obj}")
    _kube_flags(diff, "compare with")
    diff.set_defaults(target="profile.diff")
    approve = verbs.add_parser("approve", help="approve this exact content (records its hash)")
    approve.add_argument("file", metavar="FILE",
                         help=f"the profile file to approve, rewritten in place; with --kube {obj}")
    approve.add_argument("--by", default=None, help="approver (default: the user)")
    approve.add_argument("--accept-taint", action="store_true",
                         help="approve a profile whose learning a rule detection tainted")
    _kube_flags(approve, "approve")
    approve.set_defaults(target="profile.approve")
    export = verbs.add_parser("export", help="copy a directory's (or the cluster's) profiles to "
                              "OUT for review")
    export.add_argument("directory", metavar="DIR",
                        help="the profiles directory to copy from; with --kube: OUT")
    export.add_argument("out", metavar="OUT", nargs="?", default=None,
                        help="the directory to copy the profiles into")
    _kube_flags(export, "export")
    export.set_defaults(target="profile.export")
    imp = verbs.add_parser("import", help="validate files and place them in a directory (or on "
                           "the cluster)")
    imp.add_argument("files", nargs="+", metavar="FILE", help="WorkloadProfile YAML files")
    imp.add_argument("--into", default=None, metavar="DIR",
                     help="the profiles directory the running stage reads (not with --kube)")
    _kube_flags(imp, "create or update")
    imp.set_defaults(target="profile.import")
    crd = verbs.add_parser("install-crd", help="create or update the WorkloadProfile CRD and "
                           "wait until it is served (the Helm chart installs it too)")
    _kube_flags(crd, "(implied) install for")
    crd.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                     help="how long to wait for the CRD to become Established (default: 60)")
    crd.set_defaults(target="profile.install-crd")


def _incidents_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("incidents", help="list and show incidents from Loki (docs/incidents.md)")
    p.add_argument("--loki", required=True, metavar="URL",
                   help="Loki's HTTP base URL, e.g. http://127.0.0.1:3100")
    p.add_argument("--since", default="1h", metavar="DURATION",
                   help="how far back to look (e.g. 1h, 30m, 2d; default 1h)")
    p.add_argument("--id", default=None, metavar="ID",
                   help="show this incident (an id prefix is enough): story and evidence table")
    p.set_defaults(target="incidents")


def _risk_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("risk", help="runtime risk context: packages in use, vulnerabilities "
                       "labelled with it, unused grants, sensitive reach (docs/risk.md)")
    verbs = p.add_subparsers(dest="risk_command", required=True)
    for verb, text in (("list", "every workload with a snapshot, finding counts (packages by "
                        "state, grants and sensitive edges by kind and state)"),
                       ("show", "one workload: vulnerabilities (critical, in use first), "
                        "packages in use, other findings (unused grants with their patch, "
                        "sensitive edges)")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("--directory", "-d", required=True, metavar="DIR",
                       help="the risk stage's snapshot directory (its `directory`, else "
                       "<service.state_dir>/<stage name>)")
        if verb == "show":
            v.add_argument("workload", metavar="WORKLOAD",
                           help="a workload key (k8s/NS/KIND/NAME/CONTAINER, host/...) or a "
                           "part of one that names a single workload")
            v.add_argument("--report", default=None, metavar="FILE",
                           help="label this vulnerability report (CycloneDX, grype or trivy "
                           "JSON) against the snapshot")
            v.add_argument("--all", action="store_true",
                           help="list installed-only packages too")
            v.add_argument("--json", action="store_true", help="print the findings as JSON")
        v.set_defaults(target=f"risk.{verb}")


def _respond_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("respond", help="response requests: list, show, approve, reject, revert "
                       "(docs/response.md)")
    verbs = p.add_subparsers(dest="verb", required=True)
    for verb, text in (("list", "every request, oldest first"),
                       ("show", "one request: trigger, target, the diff of each change, history"),
                       ("approve", "approve a proposed request (the running stage executes it)"),
                       ("reject", "reject a proposed request"),
                       ("revert", "undo what a done or failed request changed")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("--store", default=None, metavar="DIR",
                       help="the response stage's store directory (its `store`, else "
                       "<service.state_dir>/<stage name>)")
        v.add_argument("--kube", action="store_true",
                       help="the ResponseRequest objects of a cluster instead (decisions are "
                       "patched into spec.decision; RBAC decides who may)")
        v.add_argument("--kubeconfig", default=None, metavar="FILE",
                       help="API access (default: in-cluster, else ~/.kube/config); with "
                       "revert on a local store: the identity cluster actions are undone with")
        v.add_argument("--namespace", default=None, metavar="NS",
                       help="with --kube: the requests' namespace (default: otelguard's own)")
        if verb != "list":
            v.add_argument("id", metavar="ID", help="request id (a unique prefix is enough)")
        if verb in ("approve", "reject", "revert"):
            v.add_argument("--reason", default=None, metavar="TEXT",
                           help="why (recorded in the request and the audit chain)")
            v.add_argument("--by", default=None, metavar="NAME",
                           help="who decides (default: the user)")
        if verb in ("approve", "reject", "revert"):
            v.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                           help="wait up to SECONDS for the outcome (approve: the running "
                           "stage executed it; --kube: the responder handled the decision)")
        v.set_defaults(target="respond")
    crd = verbs.add_parser("install-crd", help="install the ResponseRequest CRD (without Helm)")
    crd.add_argument("--kubeconfig", default=None, metavar="FILE",
                     help="API access (default: in-cluster, else ~/.kube/config)")
    crd.set_defaults(target="respond.install_crd")
    audit = sub.add_parser("audit", help="the response audit chain (docs/response.md#audit)")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_sub.add_parser("verify", help="check the hash chain; report the first break")
    verify.add_argument("file", nargs="?", default=None, metavar="FILE",
                        help="a local audit file (<store>/audit.jsonl)")
    verify.add_argument("--loki", default=None, metavar="URL",
                        help="read the audit stream from Loki instead, e.g. "
                        "http://127.0.0.1:3100")
    verify.add_argument("--since", default="24h", metavar="DURATION",
                        help="with --loki: how far back (default 24h)")
    verify.add_argument("--limit", type=int, default=5000, metavar="N",
                        help="with --loki: at most N records")
    verify.set_defaults(target="audit.verify")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return _target(args.target)(args)


if __name__ == "__main__":
    sys.exit(main())
