"""Every attribute key, event name and scope name otelguard emits or reads, declared once.

Semantic conventions v1.44 first; custom keys carry the ``otelguard.`` prefix. No other module
spells an attribute key as a string literal: import the constant from here. The Falco field map
(processors/detection) and the Loki/Jaeger queries in deploy/ are written against these names.
"""

from __future__ import annotations

from typing import Final

SEMCONV_SCHEMA_URL: Final = "https://opentelemetry.io/schemas/1.44.0"

# --- Instrumentation scopes -------------------------------------------------------------------
SCOPE_AGENT: Final = "otelguard.ebpf"
SCOPE_PROCESSORS: Final = "otelguard.processors"

# --- Resource (the observed container; one per host for host processes) -----------------------
CONTAINER_ID: Final = "container.id"
CONTAINER_NAME: Final = "container.name"
CONTAINER_IMAGE_NAME: Final = "container.image.name"
CONTAINER_IMAGE_TAGS: Final = "container.image.tags"
CONTAINER_RUNTIME_NAME: Final = "container.runtime.name"
K8S_POD_UID: Final = "k8s.pod.uid"
K8S_POD_NAME: Final = "k8s.pod.name"
K8S_POD_IP: Final = "k8s.pod.ip"
K8S_NAMESPACE_NAME: Final = "k8s.namespace.name"
K8S_CONTAINER_NAME: Final = "k8s.container.name"
K8S_NODE_NAME: Final = "k8s.node.name"
K8S_CLUSTER_NAME: Final = "k8s.cluster.name"
K8S_DEPLOYMENT_NAME: Final = "k8s.deployment.name"
K8S_REPLICASET_NAME: Final = "k8s.replicaset.name"
K8S_STATEFULSET_NAME: Final = "k8s.statefulset.name"
K8S_DAEMONSET_NAME: Final = "k8s.daemonset.name"
K8S_JOB_NAME: Final = "k8s.job.name"
K8S_CRONJOB_NAME: Final = "k8s.cronjob.name"
K8S_POD_LABEL_PREFIX: Final = "k8s.pod.label."
K8S_POD_ANNOTATION_PREFIX: Final = "k8s.pod.annotation."
HOST_NAME: Final = "host.name"
HOST_ID: Final = "host.id"
OS_TYPE: Final = "os.type"
SERVICE_NAME: Final = "service.name"
SERVICE_NAME_HOST: Final = "host"  # service.name of the host Resource (docs/architecture.md#streams)
# service.name of the Resource of records whose cgroup could not be resolved
SERVICE_NAME_UNRESOLVED: Final = "unresolved"
# Custom resource keys
STREAM: Final = "otelguard.stream"  # "event" | "detection"
STREAM_EVENT: Final = "event"
STREAM_DETECTION: Final = "detection"
HOST_PROCESS: Final = "otelguard.host_process"  # bool: the Resource is the host, not a container
# bool: the records' cgroup could not be resolved (gone before decode): a container or the host,
# unknown which; never marked host (docs/architecture.md#resource-attributes)
CONTAINER_UNRESOLVED: Final = "otelguard.container.unresolved"
K8S_POD_PRIVILEGED: Final = "otelguard.k8s.pod.privileged"
K8S_POD_HOST_PID: Final = "otelguard.k8s.pod.host_pid"
K8S_POD_HOST_NETWORK: Final = "otelguard.k8s.pod.host_network"
K8S_POD_ADDED_CAPABILITIES: Final = "otelguard.k8s.pod.added_capabilities"
K8S_POD_SERVICE_ACCOUNT: Final = "otelguard.k8s.pod.service_account"
# the container's pod-spec mounts, "source:dest:mode:rdwr:propagation" each (Falco's format)
K8S_CONTAINER_MOUNTS: Final = "otelguard.k8s.container.mounts"
K8S_CONTAINER_LIVENESS_PROBE: Final = "otelguard.k8s.container.liveness_probe"  # exec argv
K8S_CONTAINER_READINESS_PROBE: Final = "otelguard.k8s.container.readiness_probe"  # exec argv
# Sender identity (transport/identity.py): stamped by the agent, checked by the processor
SENDER_NODE: Final = "otelguard.sender.node"  # the node whose token signed the Resource
SENDER_NONCE: Final = "otelguard.sender.nonce"  # "<unix minute>.<agent request counter>"
SENDER_MAC: Final = "otelguard.sender.mac"  # hex HMAC-SHA256; stripped by the processor
SENDER_VERIFIED: Final = "otelguard.sender.verified"  # bool, set by the processor only
# The gateway Collector's routing key (deploy/collector/gateway-k8s.yaml): which processor
# replica a Resource's records go to; k8s/<ns>/<Kind>/<name>, pod/<uid>, container/<id>, host/<name>
ROUTING_KEY: Final = "otelguard.routing.key"

# --- Process (every event record carries the acting process) ----------------------------------
PROCESS_PID: Final = "process.pid"
PROCESS_VPID: Final = "process.vpid"  # pid in the process's own pid namespace
PROCESS_VPGID: Final = "otelguard.process.vpgid"  # process group id in that namespace
PROCESS_PARENT_PID: Final = "process.parent_pid"
PROCESS_EXECUTABLE_NAME: Final = "process.executable.name"
PROCESS_EXECUTABLE_PATH: Final = "process.executable.path"
PROCESS_COMMAND_LINE: Final = "process.command_line"  # redacted
PROCESS_COMMAND_ARGS: Final = "process.command_args"  # redacted, string[]
PROCESS_ARGS_COUNT: Final = "process.args_count"
PROCESS_USER_ID: Final = "process.user.id"  # effective uid
PROCESS_USER_NAME: Final = "process.user.name"
PROCESS_REAL_USER_ID: Final = "process.real_user.id"
PROCESS_GROUP_ID: Final = "otelguard.process.group.id"  # effective gid (semconv has none)
PROCESS_GROUP_NAME: Final = "otelguard.process.group.name"
PROCESS_WORKING_DIRECTORY: Final = "process.working_directory"
PROCESS_CREATION_TIME: Final = "process.creation.time"  # ISO 8601
PROCESS_EXIT_CODE: Final = "process.exit.code"
PROCESS_EXIT_TIME: Final = "process.exit.time"
PROCESS_INTERACTIVE: Final = "process.interactive"
PROCESS_SESSION_LEADER_PID: Final = "process.session_leader.pid"
PROCESS_LINUX_CGROUP: Final = "process.linux.cgroup"
PROCESS_TTY: Final = "otelguard.process.tty"  # int tty_nr, 0 = none
PROCESS_PARENT_EXECUTABLE_NAME: Final = "otelguard.process.parent.executable.name"
PROCESS_PARENT_EXECUTABLE_PATH: Final = "otelguard.process.parent.executable.path"
PROCESS_PARENT_COMMAND_LINE: Final = "otelguard.process.parent.command_line"
PROCESS_ANCESTORS: Final = "otelguard.process.ancestors"  # string[] comms, nearest first
PROCESS_ANCESTOR_PIDS: Final = "otelguard.process.ancestor_pids"  # int[] nearest first
PROCESS_CAP_EFFECTIVE: Final = "otelguard.process.cap_effective"  # string[] CAP_* names
PROCESS_CAP_PERMITTED: Final = "otelguard.process.cap_permitted"
# string[] "NAME=VALUE" of the allowlisted variables (sensor.probe.env_names), redacted
PROCESS_ENV: Final = "otelguard.process.env"
PROCESS_ENV_TRUNCATED: Final = "otelguard.process.env_truncated"  # bool, exec records only
PROCESS_EXE_FROM_MEMFD: Final = "otelguard.process.exe_from_memfd"  # bool
PROCESS_EXE_UPPER_LAYER: Final = "otelguard.process.exe_upper_layer"  # bool (overlayfs upper)
PROCESS_EXE_DELETED: Final = "otelguard.process.exe_deleted"  # bool
PROCESS_LOGIN_UID: Final = "otelguard.process.login_uid"
PROCESS_DURATION_NS: Final = "otelguard.process.duration_ns"  # since process start, at event time
PROCESS_SID_EXE_NAME: Final = "otelguard.process.session_leader.executable.name"

# --- Syscall outcome (every event record) -----------------------------------------------------
SYSCALL_NAME: Final = "otelguard.syscall.name"  # e.g. "openat", "execve", "connect"
SYSCALL_RET: Final = "otelguard.syscall.ret"  # int; <0 is -errno
ERROR_TYPE: Final = "error.type"  # errno name on failure, e.g. "EACCES"
LOG_RECORD_UID: Final = "log.record.uid"

# --- File ------------------------------------------------------------------------------------
FILE_PATH: Final = "file.path"  # absolute, resolved against cwd/dirfd
FILE_NAME: Final = "file.name"
FILE_DIRECTORY: Final = "file.directory"
FILE_MODE: Final = "file.mode"  # octal string, e.g. "0644" (open with O_CREAT, chmod, mkdir)
FILE_OWNER_ID: Final = "file.owner.id"  # chown target uid
FILE_GROUP_ID: Final = "file.group.id"  # chown target gid
FILE_SYMLINK_TARGET: Final = "file.symbolic_link.target_path"
FILE_OPEN_FLAGS: Final = "otelguard.file.open_flags"  # "O_WRONLY|O_CREAT|O_TRUNC"
FILE_RAW_PATH: Final = "otelguard.file.path_raw"  # as passed to the syscall
FILE_TARGET_PATH: Final = "otelguard.file.target_path"  # rename/link destination
FILE_FD: Final = "otelguard.file.fd"  # returned or operated fd
# identical opens of the same process counted in the kernel since the last one sent (dedup)
FILE_REPEAT_COUNT: Final = "otelguard.file.repeat_count"

# --- Network ---------------------------------------------------------------------------------
NETWORK_TRANSPORT: Final = "network.transport"  # tcp | udp | unix | raw | packet
NETWORK_TYPE: Final = "network.type"  # ipv4 | ipv6
NETWORK_PEER_ADDRESS: Final = "network.peer.address"
NETWORK_PEER_PORT: Final = "network.peer.port"
NETWORK_LOCAL_ADDRESS: Final = "network.local.address"
NETWORK_LOCAL_PORT: Final = "network.local.port"
NETWORK_CONNECTION_STATE: Final = "network.connection.state"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
CLIENT_ADDRESS: Final = "client.address"
CLIENT_PORT: Final = "client.port"
SOCKET_FAMILY: Final = "otelguard.socket.family"  # AF_INET, AF_PACKET, ...
SOCKET_TYPE: Final = "otelguard.socket.type"  # SOCK_STREAM, SOCK_RAW, ...
SOCKET_PROTOCOL: Final = "otelguard.socket.protocol"  # int
NETWORK_BYTES_SENT: Final = "otelguard.network.bytes_sent"
NETWORK_BYTES_RECEIVED: Final = "otelguard.network.bytes_received"
DNS_QUESTION_NAME: Final = "dns.question.name"
DNS_QUESTION_TYPE: Final = "otelguard.dns.question.type"  # "A", "AAAA", ...
# Set by the k8s enricher on records with a peer address
PEER_K8S_POD_NAME: Final = "otelguard.peer.k8s.pod.name"
PEER_K8S_NAMESPACE_NAME: Final = "otelguard.peer.k8s.namespace.name"
PEER_K8S_WORKLOAD_NAME: Final = "otelguard.peer.k8s.workload.name"
PEER_K8S_WORKLOAD_KIND: Final = "otelguard.peer.k8s.workload.kind"
PEER_K8S_SERVICE_NAME: Final = "otelguard.peer.k8s.service.name"

# --- Privilege, kernel and evasion -----------------------------------------------------------
TARGET_PID: Final = "otelguard.target.pid"  # ptrace / kill target
PTRACE_REQUEST: Final = "otelguard.ptrace.request"  # "PTRACE_ATTACH", "PTRACE_TRACEME", ...
SIGNAL: Final = "otelguard.signal"  # "SIGKILL"
NEW_UID: Final = "otelguard.privilege.new_uid"  # setuid family target (first id argument)
NEW_GID: Final = "otelguard.privilege.new_gid"
CAPABILITY: Final = "otelguard.capability"  # cap_capable: "CAP_SYS_ADMIN"
NAMESPACE_FLAGS: Final = "otelguard.namespace.flags"  # "CLONE_NEWNS|CLONE_NEWUSER"
MOUNT_SOURCE: Final = "otelguard.mount.source"
MOUNT_TARGET: Final = "otelguard.mount.target"
MOUNT_FSTYPE: Final = "otelguard.mount.fstype"
MOUNT_FLAGS: Final = "otelguard.mount.flags"
MODULE_NAME: Final = "otelguard.module.name"
BPF_COMMAND: Final = "otelguard.bpf.command"  # "BPF_PROG_LOAD"
MEMFD_NAME: Final = "otelguard.memfd.name"
DUP_OLD_FD: Final = "otelguard.dup.old_fd"
DUP_NEW_FD: Final = "otelguard.dup.new_fd"
DUP_OLD_FD_TYPE: Final = "otelguard.dup.old_fd_type"  # "socket", "file", "pipe", ...
IO_URING_OPCODE: Final = "otelguard.io_uring.opcode"  # "IORING_OP_OPENAT", ...

# --- Detection records (processors/detection) -------------------------------------------------
SECURITY_RULE_NAME: Final = "security_rule.name"
SECURITY_RULE_UUID: Final = "security_rule.uuid"
SECURITY_RULE_CATEGORY: Final = "security_rule.category"
SECURITY_RULE_DESCRIPTION: Final = "security_rule.description"
SECURITY_RULE_RULESET_NAME: Final = "security_rule.ruleset.name"
SECURITY_RULE_VERSION: Final = "security_rule.version"
POLICY_REVISION: Final = "otelguard.policy.revision"  # detection: the policy tree's revision
SECURITY_RULE_REFERENCE: Final = "security_rule.reference"
SECURITY_RULE_PRIORITY: Final = "otelguard.security_rule.priority"  # Falco priority word
SECURITY_RULE_TAGS: Final = "otelguard.security_rule.tags"  # string[]
# kvlist: the rule's output fields with Falco names and values ({"proc.name": "bash", ...}),
# what Falco's JSON alert carries as output_fields (transport/falco.py)
SECURITY_RULE_OUTPUT_FIELDS: Final = "otelguard.security_rule.output_fields"
THREAT_TECHNIQUE_ID: Final = "otelguard.threat.technique.id"  # string[] "T1059.004"
THREAT_TACTIC_NAME: Final = "otelguard.threat.tactic.name"  # string[] "execution"
TRIGGER_RECORD_UID: Final = "otelguard.trigger.record_uid"
TRIGGER_EVENT_NAME: Final = "otelguard.trigger.event_name"
DETECTION_COUNT: Final = "otelguard.detection.count"  # detections a record stands for
RESPONSE_ACTION: Final = "otelguard.response.action"  # recommended action

# --- Event names (LogRecord.event_name) -------------------------------------------------------
EV_PROCESS_EXEC: Final = "otelguard.process.exec"
EV_PROCESS_FORK: Final = "otelguard.process.fork"
EV_PROCESS_EXIT: Final = "otelguard.process.exit"
EV_FILE_OPEN: Final = "otelguard.file.open"
EV_FILE_UNLINK: Final = "otelguard.file.unlink"
EV_FILE_RENAME: Final = "otelguard.file.rename"
EV_FILE_CHMOD: Final = "otelguard.file.chmod"
EV_FILE_CHOWN: Final = "otelguard.file.chown"
EV_FILE_SYMLINK: Final = "otelguard.file.symlink"
EV_FILE_LINK: Final = "otelguard.file.link"
EV_FILE_MKDIR: Final = "otelguard.file.mkdir"
EV_FILE_TRUNCATE: Final = "otelguard.file.truncate"
EV_NETWORK_SOCKET: Final = "otelguard.network.socket"
EV_NETWORK_CONNECT: Final = "otelguard.network.connect"
EV_NETWORK_ACCEPT: Final = "otelguard.network.accept"
EV_NETWORK_BIND: Final = "otelguard.network.bind"
EV_NETWORK_LISTEN: Final = "otelguard.network.listen"
EV_NETWORK_CLOSE: Final = "otelguard.network.close"  # TCP connection reached CLOSE
EV_DNS_QUERY: Final = "otelguard.dns.query"
EV_PRIV_SETUID: Final = "otelguard.privilege.setuid"
EV_PRIV_SETGID: Final = "otelguard.privilege.setgid"
EV_PRIV_CAPSET: Final = "otelguard.privilege.capset"
EV_PRIV_CAPABLE: Final = "otelguard.privilege.capability_use"
EV_PTRACE: Final = "otelguard.process.ptrace"
EV_KILL: Final = "otelguard.process.kill"
EV_UNSHARE: Final = "otelguard.namespace.unshare"
EV_SETNS: Final = "otelguard.namespace.setns"
EV_MOUNT: Final = "otelguard.filesystem.mount"
EV_MODULE_LOAD: Final = "otelguard.kernel.module_load"
EV_BPF: Final = "otelguard.kernel.bpf"
EV_MEMFD_CREATE: Final = "otelguard.process.memfd_create"
EV_DUP: Final = "otelguard.process.dup"
EV_IO_URING: Final = "otelguard.io_uring.submit"
EV_DETECTION: Final = "otelguard.security.detection"
EV_RESPONSE: Final = "otelguard.security.response"

# --- Metric names (Prometheus) -----------------------------------------------------------------
METRIC_EVENTS: Final = "otelguard_events"  # prometheus_client appends _total
METRIC_DETECTIONS: Final = "otelguard_detections"
METRIC_DROPPED: Final = "otelguard_dropped"
METRIC_EXPORT_FAILURES: Final = "otelguard_export_failures"  # {stage, reason}: failed sends
METRIC_PROGRAM_CACHE: Final = "otelguard_bpf_program_cache"  # {result}: loads by source
METRIC_PIPELINE_LATENCY: Final = "otelguard_pipeline_latency_seconds"
METRIC_SPOOL_REQUESTS: Final = "otelguard_spool_requests"  # agent: OTLP requests waiting on disk
METRIC_SPOOL_BYTES: Final = "otelguard_spool_bytes"  # agent: their size

# --- Spans (exporter/spans) -------------------------------------------------------------------
SPAN_END_REASON: Final = "otelguard.span.end_reason"  # exit | exec | close | shutdown | evicted

# --- Processor service (processors/metrics.py) --------------------------------------------------
METRIC_PROC_REQUESTS: Final = "otelguard_processor_requests"  # {signal, protocol, outcome}
METRIC_PROC_RECEIVED: Final = "otelguard_processor_records_received"  # {signal, protocol}
METRIC_PROC_FORWARDED: Final = "otelguard_processor_records_forwarded"  # {signal, exporter}
METRIC_PROC_FORWARD_RETRIES: Final = "otelguard_processor_forward_retries"  # {exporter}
METRIC_PROC_FORWARD_FAILURES: Final = "otelguard_processor_forward_failures"  # {exporter, reason}
METRIC_PROC_STAGE_IN: Final = "otelguard_processor_stage_records_in"  # {stage}
METRIC_PROC_STAGE_OUT: Final = "otelguard_processor_stage_records_out"  # {stage}
METRIC_PROC_STAGE_FAILURES: Final = "otelguard_processor_stage_failures"  # {stage}
METRIC_PROC_INFLIGHT_REQUESTS: Final = "otelguard_processor_inflight_requests"
METRIC_PROC_INFLIGHT_BYTES: Final = "otelguard_processor_inflight_bytes"
METRIC_PROC_REQUEST_LATENCY: Final = "otelguard_processor_request_latency_seconds"  # {signal}
# live reload of rules and config (processors/reload.py; docs/architecture.md#live-reload)
METRIC_CONFIG_RELOADS: Final = "otelguard_config_reloads"  # {component, result}
METRIC_CONFIG_LAST_RELOAD_SUCCESS: Final = (  # {component}
    "otelguard_config_last_reload_success_timestamp_seconds")
METRIC_RULES_LOADED: Final = "otelguard_rules_loaded"  # {stage, revision}: rules in effect
METRIC_POLICY_EXCEPTIONS_EXPIRED: Final = (  # gauge: policy-tree exceptions past their date
    "otelguard_policy_exceptions_expired")
# noise_control: collapsed detections carry the window's first and last occurrence (ISO 8601)
DETECTION_FIRST_SEEN: Final = "otelguard.detection.first_seen"
DETECTION_LAST_SEEN: Final = "otelguard.detection.last_seen"
# noise_control throttle records (docs/architecture.md#noise-control)
NOISE_THROTTLE: Final = "otelguard.noise.throttle"  # "start" | "stop"
NOISE_KEY: Final = "otelguard.noise.key"  # the throttled key: rule, workload, key field values
NOISE_THROTTLE_START: Final = "start"
NOISE_THROTTLE_STOP: Final = "stop"

# --- k8s enrichment (processors/k8s) ----------------------------------------------------------
K8S_NAMESPACE_LABEL_PREFIX: Final = "k8s.namespace.label."
METRIC_K8S_ENRICHMENT: Final = "otelguard_k8s_enrichment"  # {target, result}

# --- Network, privilege and evasion probes (additions) -----------------------------------------
NETWORK_LISTEN_BACKLOG: Final = "otelguard.network.listen.backlog"  # int
NETWORK_CONNECTION_DURATION_NS: Final = "otelguard.network.connection.duration_ns"  # on close
IO_URING_SETUP_FLAGS: Final = "otelguard.io_uring.setup_flags"  # "IORING_SETUP_SQPOLL|..."
MEMFD_FLAGS: Final = "otelguard.memfd.flags"  # "MFD_CLOEXEC|MFD_EXEC"
EV_IO_URING_SETUP: Final = "otelguard.io_uring.setup"

# --- Attack scenarios (tests/attacks) -----------------------------------------------------------
# The kernel's comm of the acting thread (<= 15 chars, from the record header): the name the
# process was exec'ed under (a symlink's name for busybox-style applets), which is Falco's
# proc.name; process.executable.name stays the basename of /proc/<pid>/exe as semconv says.
PROCESS_COMM: Final = "otelguard.process.comm"

# --- Behaviour profiles (processors/profiles; docs/profiles.md) ---------------------------------
ANOMALY_KIND: Final = "otelguard.anomaly.kind"  # process, untrusted_exec, file_write, ...
ANOMALY_VALUE: Final = "otelguard.anomaly.value"  # the observed value the profile lacks
ANOMALY_NEAREST: Final = "otelguard.anomaly.nearest"  # string[]: closest allowed entries
PROFILE_WORKLOAD: Final = "otelguard.profile.workload"  # the profile's workload key
PROFILE_STATE: Final = "otelguard.profile.state"  # learning | learned | tainted | approved
PROFILE_REVISION: Final = "otelguard.profile.revision"  # int
PROFILE_CONTENT_HASH: Final = "otelguard.profile.content_hash"  # "sha256:<hex>" of its spec
PROFILE_LEARNING_ENDED: Final = "otelguard.profile.learning_ended"  # ISO 8601
PROFILE_OBSERVATIONS: Final = "otelguard.profile.observations"  # int, seen while learning
PROFILE_ENTRIES: Final = "otelguard.profile.entries"  # int, allowed entries of the kind
PROFILE_APPROVED_BY: Final = "otelguard.profile.approved_by"
METRIC_PROFILES: Final = "otelguard_profiles"  # gauge {state}
METRIC_PROFILE_ENTRIES: Final = "otelguard_profile_entries"  # gauge {list: allowed|quarantined}
METRIC_PROFILE_OVERFLOW: Final = "otelguard_profile_overflow"  # counter {reason}
METRIC_PROFILE_ANOMALIES: Final = "otelguard_profile_anomalies"  # counter {kind}
# counter {kind}: deviations a policy tree's ProfileException covered (not reported)
METRIC_PROFILE_EXCEPTED: Final = "otelguard_profile_deviations_excepted"
METRIC_PROFILE_FILE_ERRORS: Final = "otelguard_profile_file_errors"  # counter {op}

# --- Incidents (processors/incidents; docs/incidents.md) -----------------------------------------
EV_INCIDENT: Final = "otelguard.incident"  # one record per incident version
STREAM_INCIDENT: Final = "incident"  # otelguard.stream of incident Resources (own Loki stream)
INCIDENT_ID: Final = "otelguard.incident.id"  # UUIDv5 of the first detection's uid
INCIDENT_VERSION: Final = "otelguard.incident.version"  # int, grows with every change
INCIDENT_STATUS: Final = "otelguard.incident.status"  # "open" | "closed"
INCIDENT_SEVERITY: Final = "otelguard.incident.severity"  # Falco priority word, after chaining
INCIDENT_SEVERITY_REASON: Final = "otelguard.incident.severity_reason"  # why it was raised
INCIDENT_TITLE: Final = "otelguard.incident.title"
INCIDENT_FIRST_SEEN: Final = "otelguard.incident.first_seen"  # ISO 8601
INCIDENT_LAST_SEEN: Final = "otelguard.incident.last_seen"  # ISO 8601
INCIDENT_WORKLOAD: Final = "otelguard.incident.workload"  # the grouping workload key
INCIDENT_NODE: Final = "otelguard.incident.node"
INCIDENT_TECHNIQUES: Final = "otelguard.incident.techniques"  # string[] in tactic order
INCIDENT_TACTICS: Final = "otelguard.incident.tactics"  # string[] in ATT&CK order
INCIDENT_EVIDENCE: Final = "otelguard.incident.evidence"  # string[] uids, then trace ids
INCIDENT_EVENTS: Final = "otelguard.incident.events"  # int: raw events of its process trees
INCIDENT_DETECTIONS: Final = "otelguard.incident.detections"  # int: detections folded in
INCIDENT_STEPS: Final = "otelguard.incident.steps"  # int: story sentences (steps)
INCIDENT_NARRATOR: Final = "otelguard.incident.narrator"  # "template" | "llm" | "rejected"
INCIDENT_NARRATOR_DETAIL: Final = "otelguard.incident.narrator.detail"  # why not llm
INCIDENT_LINK_LOGS: Final = "otelguard.incident.link.logs"  # LogQL of the evidence records
INCIDENT_LINK_TRACE: Final = "otelguard.incident.link.trace"  # Jaeger URL of its first trace
METRIC_INCIDENT_RECORDS: Final = "otelguard_incident_records"  # counter {reason}
METRIC_INCIDENTS_OPEN: Final = "otelguard_incidents_open"  # gauge
METRIC_INCIDENT_NARRATIONS: Final = "otelguard_incident_narrations"  # counter {result}
METRIC_INCIDENT_RISK_FACTS_DROPPED: Final = "otelguard_incident_risk_facts_dropped"  # counter {reason}

# --- Response and its audit chain (response/; docs/response.md) -------------------------------
EV_RESPONSE_AUDIT: Final = "otelguard.response.audit"  # one record per request transition
STREAM_AUDIT: Final = "audit"  # otelguard.stream of audit Resources (own Loki stream)
AUDIT_CHAIN: Final = "otelguard.audit.chain"  # the chain's id (one per store)
AUDIT_SEQ: Final = "otelguard.audit.seq"  # int: position in the chain, from 1
AUDIT_PREV_HASH: Final = "otelguard.audit.prev_hash"  # the previous record's hash (64 hex)
AUDIT_HASH: Final = "otelguard.audit.hash"  # SHA-256 of this record's canonical form
AUDIT_TIME: Final = "otelguard.audit.time"  # ISO 8601 of the transition (hashed)
RESPONSE_REQUEST_ID: Final = "otelguard.response.request.id"
RESPONSE_STATE_FROM: Final = "otelguard.response.state.from"  # "New" for the creation
RESPONSE_STATE_TO: Final = "otelguard.response.state.to"
RESPONSE_ACTOR: Final = "otelguard.response.actor"  # who: a person, or policy:<name>, system
RESPONSE_REASON: Final = "otelguard.response.reason"
RESPONSE_POLICY_NAME: Final = "otelguard.response.policy.name"
RESPONSE_POLICY_REVISION: Final = "otelguard.response.policy.revision"
RESPONSE_MODE: Final = "otelguard.response.mode"  # advise | approve | auto
RESPONSE_DRY_RUN: Final = "otelguard.response.dry_run"  # bool
RESPONSE_ACTIONS: Final = "otelguard.response.actions"  # "isolate_pod,label_pod" in order
RESPONSE_CHANGES_HASH: Final = "otelguard.response.changes_hash"  # sha256: of the planned diff
RESPONSE_TARGET: Final = "otelguard.response.target"  # the first change's summary line
RESPONSE_TRIGGER_UID: Final = "otelguard.response.trigger.uid"  # detection uid or incident id
RESPONSE_OUTCOME: Final = "otelguard.response.outcome"  # what apply/revert said, per step
METRIC_RESPONSE_TRANSITIONS: Final = "otelguard_response_transitions"  # counter {policy, to}
METRIC_RESPONSE_SUPPRESSED: Final = "otelguard_response_suppressed"  # counter {policy, reason}
METRIC_RESPONSE_AUDIT_SEQ: Final = "otelguard_response_audit_seq"  # gauge: the chain's head
METRIC_RESPONSE_PENDING: Final = "otelguard_response_pending"  # gauge: requests awaiting approval

# --- Runtime risk context (risk/, processors/risk; docs/risk.md) ---------------------------------
EV_RISK_FINDING: Final = "otelguard.risk.finding"  # one record per new or changed finding
STREAM_RISK: Final = "risk"  # otelguard.stream of risk Resources (own Loki stream)
RISK_ANALYSER: Final = "otelguard.risk.analyser"  # packages | grants | reach
RISK_KIND: Final = "otelguard.risk.kind"  # what the finding is about: package, vulnerability, ...
RISK_SUBJECT: Final = "otelguard.risk.subject"  # the finding's key within workload and kind
RISK_STATE: Final = "otelguard.risk.state"  # the verdict: executed | loaded | installed-only ...
RISK_SEVERITY: Final = "otelguard.risk.severity"  # critical | high | medium | low | none | unknown
RISK_WORKLOAD: Final = "otelguard.risk.workload"  # the workload key (profiles' key)
RISK_FIRST_SEEN: Final = "otelguard.risk.first_seen"  # ISO 8601 of the first evidence
RISK_LAST_SEEN: Final = "otelguard.risk.last_seen"  # ISO 8601 of the latest evidence
RISK_EVIDENCE: Final = "otelguard.risk.evidence"  # string[]: log.record.uid of evidence records
RISK_EVIDENCE_PATHS: Final = "otelguard.risk.evidence.paths"  # string[]: path as used -> file
RISK_EVIDENCE_TRACES: Final = "otelguard.risk.evidence.traces"  # string[]: latest users' trace ids
PACKAGE_NAME: Final = "otelguard.package.name"  # dpkg/apk/rpm name, PyPI/npm name, Maven g:a
PACKAGE_VERSION: Final = "otelguard.package.version"
PACKAGE_ECOSYSTEM: Final = "otelguard.package.ecosystem"  # deb | apk | rpm | pypi | npm | maven
PACKAGE_PURL: Final = "otelguard.package.purl"  # package URL (purl-spec), when derivable
VULNERABILITY_ID: Final = "otelguard.vulnerability.id"  # CVE-..., GHSA-...
VULNERABILITY_SOURCE: Final = "otelguard.vulnerability.source"  # the report file it came from
VULNERABILITY_VEX_STATE: Final = "otelguard.vulnerability.vex_state"  # CycloneDX analysis.state
METRIC_RISK_FINDINGS: Final = "otelguard_risk_findings"  # gauge {workload, analyser, kind, state, severity}
METRIC_RISK_WORKLOADS: Final = "otelguard_risk_workloads"  # gauge: workloads held
METRIC_RISK_DROPPED: Final = "otelguard_risk_dropped"  # counter {analyser, reason}

# --- Risk: granted vs used, sensitive reach (risk/grants.py, risk/reach.py; docs/risk.md) ---------
RISK_SUGGESTION: Final = "otelguard.risk.suggestion"  # YAML: a strategic-merge patch (grants)
RISK_OBSERVED_SECONDS: Final = "otelguard.risk.observed_seconds"  # double: observation so far
RISK_LEARNING_SECONDS: Final = "otelguard.risk.learning_seconds"  # double: the window
RISK_SOURCE_TIER: Final = "otelguard.risk.source.tier"  # the connecting workload's tier
RISK_TARGET: Final = "otelguard.risk.target"  # service:NS/NAME, builtin:api-server, ...
RISK_TARGET_TIER: Final = "otelguard.risk.target.tier"
RISK_TARGET_REASON: Final = "otelguard.risk.target.reason"  # "label on Service db/pg", ...
