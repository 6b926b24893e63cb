"""Live reload: rules files and the pipeline config, re-read without a restart.

Where it sits: docs/architecture.md#live-reload. Used by ``otelguard processor``
(processors/cli.py) and ``otelguard run`` (runner.py); both give a ``load`` function that reads
and validates their config file with the command line's overrides, exactly as at start-up.

A :class:`ConfigReloader` watches the config file and every rules file and directory the
pipeline reads. It polls each ``reload.watch_interval_seconds`` (a directory: its visible files;
a file: path resolved through symlinks, mtime, size and content hash), which sees a Kubernetes
ConfigMap update (the kubelet swaps the volume's ``..data`` symlink, so the files' resolved
paths change) as well as an edit in place; ``request()`` (SIGHUP) reloads at once. A reload
loads and validates everything off to the side, then the pipeline swaps the stages' new config
in between two batches (:meth:`Pipeline.reconfigure`). Any problem (YAML, unknown key, a
condition that does not compile, a macro that does not resolve) keeps everything running as it
was, logs one error listing every problem with file:line, and counts
``otelguard_config_reloads_total{result="failure"}``; ``/readyz`` stays ready and its ``reload``
check says the last reload failed. Changes that only a restart can apply (listen addresses, TLS
paths, exporters, sensor settings, stages added or removed) keep the running value and are
named in a warning and in that check. Cost: one stat and one read+hash of each watched file per
poll (the packaged rules, 71 KB: 0.33 ms); compiling them for a reload, ~0.4 s on the watcher
thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol, Sequence, runtime_checkable

from otelguard.config import ConfigError
from otelguard.processors import metrics, registry
from otelguard.processors.config import ProcessorSpec, ReloadConfig
from otelguard.processors.errors import ProcessorsError
from otelguard.processors.pipeline import Pipeline
from otelguard.telemetry import Check

log = logging.getLogger(__name__)

LIVE_KEYS = ("processors", "reload")  # top-level config keys a reload applies


@runtime_checkable
class WatchesFiles(Protocol):
    """A stage that reads files whose change should reload it (falco_rules' rules)."""

    def watched_files(self) -> Sequence[str]: ...


@runtime_checkable
class HasRules(Protocol):
    """A stage with a rule set: (revision, rules in effect)."""

    def rules_info(self) -> tuple[str, int]: ...


FilePrint = tuple[Any, ...]


def fingerprint(paths: Iterable[str]) -> dict[str, tuple[FilePrint, ...]]:
    """Per watched path, what identifies its content: a file's resolved path, mtime, size and
    sha256; a directory's visible file names and each of theirs."""
    out: dict[str, tuple[FilePrint, ...]] = {}
    for path in paths:
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if not f.name.startswith(".") and f.is_file())
            out[path] = tuple(_file_print(f) for f in files)
        else:
            out[path] = (_file_print(p),)
    return out


def _file_print(p: Path) -> FilePrint:
    try:
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError as exc:
        return (str(p), "unreadable", exc.errno)
    return (str(p), os.path.realpath(p), st.st_mtime_ns, st.st_size, digest)


def changed_keys(old: Any, new: Any, skip: Sequence[str] = LIVE_KEYS, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves that differ between two configs, ``skip`` paths left out."""
    if not (dataclasses.is_dataclass(old) and type(old) is type(new)):
        return [prefix or "<root>"] if old != new else []
    out: list[str] = []
    for f in dataclasses.fields(old):
        path = f"{prefix}.{f.name}" if prefix else f.name
        a, b = getattr(old, f.name), getattr(new, f.name)
        if path not in skip and a != b:
            out += changed_keys(a, b, skip, path)
    return out


class ConfigReloader:
    """Reloads ``pipeline`` from ``load()`` when its files change or on :meth:`request`.

    ``config`` is what the process started with; ``load`` returns a new one (raising
    ConfigError with every problem); ``specs_of`` and ``reload_of`` read its stages and its
    ``reload:`` section. ``config_file`` (None: no file, only rules are watched) is watched too.
    """

    def __init__(self, pipeline: Pipeline, config: Any, load: Callable[[], Any], *,
                 specs_of: Callable[[Any], Sequence[ProcessorSpec]],
                 reload_of: Callable[[Any], ReloadConfig],
                 config_file: Optional[str] = None) -> None:
        self.pipeline = pipeline
        self._started_with = config  # restart-only keys are compared with this
        self._config = config  # the last config applied
        self._attempted = config  # the last config that parsed: its rules files are watched
        self._load, self._specs_of, self._reload_of = load, specs_of, reload_of
        self.config_file = config_file
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None
        self._seen = fingerprint(self.watched())
        self._rules_labels: dict[str, str] = {}
        self.last_success = time.time()
        self.last_failure: Optional[tuple[float, str]] = None  # (when, what, every problem)
        self.needs_restart: list[str] = []
        self.reloads = 0
        for component in self._components(rules=True):
            metrics.config_last_reload_success.labels(component).set(self.last_success)
        self._publish_rules()

    # --- what is watched ---------------------------------------------------------------------

    def watched(self) -> list[str]:
        paths = [self.config_file] if self.config_file else []
        for _name, stage in self.pipeline.stages():
            if isinstance(stage, WatchesFiles):
                paths += stage.watched_files()
        for spec in self._specs_of(self._attempted):
            field = registry.entry(spec.type).rules_field
            if field is not None:
                paths += getattr(spec.config, field, ()) or ()
        return sorted(set(paths))

    def changed(self) -> bool:
        """Whether any watched path differs from what the last reload (or start-up) read."""
        now = fingerprint(self.watched())
        return any(self._seen.get(path) != prints for path, prints in now.items())

    # --- reloading ---------------------------------------------------------------------------

    def reload(self, trigger: str = "request") -> bool:
        """Load, validate and swap in; False (and nothing changed) when anything is wrong."""
        with self._lock:
            seen = fingerprint(self.watched())
            try:
                new = self._load()
            except (ConfigError, ProcessorsError, ValueError) as exc:
                return self._failed("config", trigger, exc, seen)
            self._attempted = new
            seen = {**fingerprint(self.watched()), **seen}  # files the new config adds
            try:
                result = self.pipeline.reconfigure(self._specs_of(new))
            except Exception as exc:  # RulesError (a ConfigError) or a stage's own failure
                return self._failed("rules", trigger, exc, seen)
            self._seen = seen
            self._config = new
            self.reloads += 1
            self.last_success = time.time()
            self.last_failure = None
            for component in self._components(rules=bool(result.applied)):
                metrics.config_reloads.labels(component, "success").inc()
                metrics.config_last_reload_success.labels(component).set(self.last_success)
            self._publish_rules()
            self.needs_restart = changed_keys(self._started_with, new) + result.needs_restart
            log.info("reloaded (%s): %s", trigger, self._rules_text() or "no rules stage")
            if self.needs_restart:
                log.warning("%s: changed, applied only after a restart (the running value is "
                            "kept): %s", self.config_file or "config",
                            ", ".join(self.needs_restart))
            return True

    def _failed(self, component: str, trigger: str, exc: Exception,
                seen: dict[str, tuple[FilePrint, ...]]) -> bool:
        self._seen = seen  # the same broken content is not retried every poll
        problems = exc.messages if isinstance(exc, ConfigError) else [f"{type(exc).__name__}: "
                                                                      f"{exc}"]
        self.last_failure = (time.time(), problems[0] + (f" (+{len(problems) - 1} more)"
                                                        if len(problems) > 1 else ""))
        metrics.config_reloads.labels(component, "failure").inc()
        log.error("reload (%s) failed, still running the previous %s (%s); %d problem(s):\n  %s",
                  trigger, "config and rules", self._rules_text() or "no rules stage",
                  len(problems), "\n  ".join(problems))
        return False

    def _components(self, rules: bool) -> list[str]:
        out = ["config"] if self.config_file else []
        if rules and any(isinstance(s, HasRules) for _n, s in self.pipeline.stages()):
            out.append("rules")
        return out

    def _publish_rules(self) -> None:
        for name, stage in self.pipeline.stages():
            if isinstance(stage, HasRules):
                revision, count = stage.rules_info()
                old = self._rules_labels.get(name)
                if old is not None and old != revision:
                    metrics.rules_loaded.remove(name, old)
                metrics.rules_loaded.labels(name, revision).set(count)
                self._rules_labels[name] = revision

    def _rules_text(self) -> str:
        return ", ".join(f"{name}: rules {rev} ({n} rules)" for name, stage
                         in self.pipeline.stages() if isinstance(stage, HasRules)
                         for rev, n in [stage.rules_info()])

    # --- health ------------------------------------------------------------------------------

    def check(self) -> Check:
        """The ``reload`` readiness check: always passing (the previous rules still run), with
        a warning while the last reload failed or changes wait for a restart."""
        parts = [self._rules_text() or "no rules stage",
                 "loaded " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_success))]
        if self.last_failure is not None:
            when, what = self.last_failure
            parts.append("LAST RELOAD FAILED at " + time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime(when)) + f": {what}; the previous rules and "
                "config still run")
        if self.needs_restart:
            parts.append("needs restart for: " + ", ".join(self.needs_restart))
        return Check("reload", True, "; ".join(parts),
                     warn=self.last_failure is not None or bool(self.needs_restart))

    # --- the watcher thread ------------------------------------------------------------------

    def request(self) -> None:
        """Reload soon, on the watcher thread (safe from a signal handler)."""
        self._wake.set()

    def start(self) -> ConfigReloader:
        self._thread = threading.Thread(target=self._run, name="otelguard-reload", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _run(self) -> None:
        while True:
            interval = self._reload_of(self._config).watch_interval_seconds
            woken = self._wake.wait(interval if interval > 0 else None)
            if self._stopping:
                return
            try:
                if woken:
                    self._wake.clear()
                    self.reload("SIGHUP")
                elif self.changed():
                    self.reload("files changed")
            except Exception:  # never let the watcher die: the next change tries again
                log.exception("reload failed unexpectedly")
