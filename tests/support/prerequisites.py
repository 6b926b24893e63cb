"""What a test needs from the machine (root, a binary, a tool), checked in one way everywhere.

In CI (``CI=true``, set by the CI runner) a missing prerequisite is a failure: CI provides
everything, so a test that skipped there would pass while checking nothing. On a developer's
machine it is a skip that names what is missing and how to get it. The one skip CI allows
is not decided here: module-load tests on a kernel built without module support (there is no
tracepoint to attach to; ``pytest.mark.skipif`` on the tracepoint's directory).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from tests.support.kube import ETCD, apiserver_binary


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> NoReturn:
    """Fail in CI, skip elsewhere; ``reason`` says what is missing and how to get it."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite fails instead of skipping)",
                    pytrace=False)
    pytest.skip(reason)


def require_root() -> None:
    if os.geteuid() != 0:
        missing("needs root and the real kernel (run the tests as root)")


def require_file(path: Path, how: str) -> None:
    """``path`` must exist; ``how`` tells how to get it."""
    if not path.exists():
        missing(f"{path} is missing: {how}")


def require_kube_apiserver() -> None:
    """The kube-apiserver from the stack build and Debian's etcd, for a real control plane."""
    require_file(apiserver_binary(), "run `bash scripts/stack/build.sh kubernetes` "
                                     "(or `make stack-build`)")
    require_file(Path(ETCD), "`make setup` installs it (Debian package etcd-server)")
