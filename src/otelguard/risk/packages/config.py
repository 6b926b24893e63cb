"""The ``packages`` section of a ``risk`` stage (docs/risk.md#in-use-packages)."""

from __future__ import annotations

from dataclasses import dataclass, field

from otelguard.config import Checks


@dataclass(frozen=True)
class ReportSource:
    """A vulnerability report file and the workloads it describes."""

    file: str = ""  # CycloneDX JSON (SBOM with vulnerabilities, or VEX), grype JSON, trivy JSON
    # fnmatch patterns over workload keys (docs/profiles.md#workloads) this report is about,
    # e.g. ["k8s/shop/Deployment/cart/*"]; a report describes one image, so name its workloads
    workloads: tuple[str, ...] = ("*",)

    def __post_init__(self) -> None:
        checks = Checks()
        if not self.file:
            checks.add("file", "a report file is required")
        if not self.workloads:
            checks.add("workloads", "at least one workload pattern")
        checks.done()


@dataclass(frozen=True)
class PackagesConfig:
    """Which files count as used code, and the bounds that keep memory flat per workload."""

    # Opens of files ending so (after the version suffix of a shared object, libfoo.so.1.2) are
    # code loads; executed binaries always are. Opens with write intent never are.
    code_suffixes: tuple[str, ...] = (
        ".so", ".py", ".pyc", ".js", ".mjs", ".cjs", ".node", ".jar",
    )
    # Added to the sensor's kernel read filter (sensor.probe.read_path_prefixes) by `otelguard
    # run` when this analyser runs; an agent needs them in its own sensor config (docs/risk.md
    # #what-the-sensor-must-send). Read-only opens elsewhere never reach user space.
    read_path_prefixes: tuple[str, ...] = (
        "/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/local/lib/", "/opt/", "/app/",
        "/srv/",
    )
    # Python site directories (globs relative to the root) whose dist-info packages are the
    # installed PyPI set; site directories met in observed paths are read too
    python_site_globs: tuple[str, ...] = (
        "usr/lib/python3*/site-packages", "usr/lib/python3*/dist-packages",
        "usr/lib/python3/dist-packages", "usr/local/lib/python3*/site-packages",
        "usr/local/lib/python3*/dist-packages", "opt/*/lib/python3*/site-packages",
        "opt/*/*/lib/python3*/site-packages", "app/*/lib/python3*/site-packages",
        "venv/lib/python3*/site-packages",
    )
    # node_modules directories (globs relative to the root) whose packages are the installed
    # npm set; node_modules met in observed paths are read too
    node_module_globs: tuple[str, ...] = (
        "usr/lib/node_modules", "usr/local/lib/node_modules", "app/node_modules",
        "opt/*/node_modules", "srv/*/node_modules",
    )
    reports: tuple[ReportSource, ...] = ()  # vulnerability reports to label (files, no network)
    max_packages: int = 4096  # packages held per workload (installed ones included)
    max_evidence: int = 4  # evidence record uids kept per used package (the first ones)
    max_pending: int = 65_536  # paths waiting for resolution over all workloads; more: dropped
    max_inventories: int = 64  # package inventories cached (shared by identical roots)
    max_roots: int = 256  # container root directory handles kept open (LRU)
    resolve_interval_seconds: float = 0.2  # how often the resolver thread takes pending paths

    def __post_init__(self) -> None:
        checks = Checks()
        checks.at_least(self, 1, "max_packages", "max_evidence", "max_pending",
                        "max_inventories", "max_roots")
        checks.above(self, 0, "resolve_interval_seconds")
        for i, prefix in enumerate(self.read_path_prefixes):
            if not prefix.startswith("/"):
                checks.add(f"read_path_prefixes[{i}]", f"expected an absolute path, got {prefix!r}")
        for i, suffix in enumerate(self.code_suffixes):
            if not suffix.startswith("."):
                checks.add(f"code_suffixes[{i}]", f"expected a suffix like .so, got {suffix!r}")
        checks.done()
