"""``incidents`` config; its defaults are the default config.

Semantics: docs/incidents.md (grouping, templates, evidence, the narrator) and
docs/architecture.md#incidents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from otelguard.config import Checks


@dataclass(frozen=True)
class LlmConfig:
    """An OpenAI-compatible chat completions endpoint that may retell an incident. It gets only
    the incident's facts as JSON; its answer is used only when the validator finds every name,
    path, address, command, user, technique and evidence id it mentions in those facts."""

    base_url: str  # e.g. http://127.0.0.1:8080/v1 ("/chat/completions" is appended)
    model: str  # the model name sent with each request
    # Environment variable holding the API key (sent as "Authorization: Bearer ..."); empty:
    # no key is sent. The key itself never appears in a config file.
    api_key_env: str = "OTELGUARD_LLM_API_KEY"
    timeout_s: float = 10.0  # per request; past it the template story stands
    # Replace pod, namespace, workload, container, image, node and host names with placeholders
    # (pod-1, ns-1, ...) before the facts leave, and put the real names back into the answer
    mask_names: bool = True
    max_queue: int = 64  # incidents waiting for the model; more are told by template only

    def __post_init__(self) -> None:
        checks = Checks()
        if not self.base_url.startswith(("http://", "https://")):
            checks.add("base_url", f"must be an http:// or https:// URL, got {self.base_url!r}")
        if not self.model:
            checks.add("model", "must not be empty")
        checks.above(self, 0, "timeout_s")
        checks.at_least(self, 1, "max_queue")
        checks.done()


@dataclass(frozen=True)
class StoryConfig:
    """How an incident is told: templates always; a model too when ``llm`` is set."""

    llm: Optional[LlmConfig] = None  # the optional narrator; null: template stories only


@dataclass(frozen=True)
class LinksConfig:
    """Links written on each incident. The words ``{id}``, ``{trace_id}`` and ``{uids}`` (the
    cited log.record.uids joined with ``|``) are replaced as they stand (no other brace is
    special, so LogQL selectors need no escaping); an empty template writes no link."""

    # LogQL of the records the story cites (paste into Grafana Explore on the Loki data source)
    logs: str = '{otelguard_stream=~"event|detection"} | log_record_uid=~"{uids}"'
    # URL of the incident's first process trace in Jaeger's UI
    trace: str = "http://127.0.0.1:16686/trace/{trace_id}"


@dataclass(frozen=True)
class Config:
    """Defaults: an incident stays open while related detections keep coming, and closes
    after 10 minutes without one."""

    # An open incident takes a related detection only within this many seconds of its last
    # one; after that it closes (a last version with status closed) and a new one opens.
    idle_seconds: float = 600.0
    max_open: int = 10_000  # incidents open at once; a new one beyond closes the oldest early
    max_steps: int = 32  # story sentences per incident; further distinct detections are counted
    # Raw events remembered per process trace before any detection in it (so an incident
    # counts the events of its process tree that came before its first detection): traces
    max_traces: int = 65_536
    story: StoryConfig = field(default_factory=StoryConfig)  # templates and the narrator
    links: LinksConfig = field(default_factory=LinksConfig)  # links to Loki and Jaeger

    def __post_init__(self) -> None:
        checks = Checks()
        checks.above(self, 0, "idle_seconds")
        checks.at_least(self, 1, "max_open", "max_steps", "max_traces")
        checks.done()
