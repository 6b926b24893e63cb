"""``otelguard profile ... --kube``: the same review verbs against WorkloadProfile objects
(docs/profiles.md#profiles-in-a-cluster), plus ``install-crd``.

An object is named ``NAME`` or ``NAMESPACE/NAME`` (namespace default: ``--namespace``), or by its
workload key (``k8s/shop/Deployment/cart/web``: the name is derived from it). ``approve`` writes
the approval through the status subresource with the object's resourceVersion and re-reads and
retries on a conflict, so RBAC on ``workloadprofiles/status`` decides who may approve and a
concurrent edit is never approved unseen. ``export`` writes one file per object, the files the
directory store and Git review use; ``import`` creates or updates objects from files (their
approval included, which needs the same status permission).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path
from typing import Any, Optional

from otelguard.kube import (
    AlreadyExists, CustomResources, KubeError, api_client_from, install_crd,
)
from otelguard.processors.profiles.cli import HEADER, approved, diff, row, show
from otelguard.processors.profiles.document import (
    ProfileDocument, dump, file_name, load, write_atomic,
)
from otelguard.processors.profiles.objects import (
    PLURAL, ObjectError, from_object, object_name, spec_patch, status_patch, to_object,
)

CRD_FILE = Path(__file__).with_name("crd.yaml")
WORKLOAD_PREFIXES = ("k8s/", "image/", "container/", "host/")
Obj = dict[str, Any]


def _client(args: argparse.Namespace) -> Any:
    return api_client_from(args.kubeconfig or "", args.context or "")


def _resources(args: argparse.Namespace) -> CustomResources:
    return CustomResources(_client(args), PLURAL)


def ref(args: argparse.Namespace, text: str) -> tuple[str, str]:
    """(namespace, name) of ``NAME``, ``NS/NAME`` or a workload key."""
    if text.startswith(WORKLOAD_PREFIXES):
        return args.namespace, object_name(text)
    ns, _, name = text.rpartition("/")
    return ns or args.namespace, name


def _get(args: argparse.Namespace, text: str) -> ProfileDocument:
    ns, name = ref(args, text)
    return from_object(_resources(args).get(name, ns))


def _fail(exc: Exception) -> int:
    sys.stderr.write(f"{exc}\n")
    return 1


def list_main(args: argparse.Namespace) -> int:
    try:
        items = _resources(args).list(args.namespace).items
    except (KubeError, ValueError) as exc:
        return _fail(exc)
    bad = 0
    sys.stdout.write(HEADER)
    for obj in items:
        try:
            sys.stdout.write(row(from_object(obj)))
        except ObjectError as exc:
            sys.stderr.write(f"{exc}\n")
            bad += 1
    return 1 if bad else 0


def show_main(args: argparse.Namespace) -> int:
    try:
        doc = _get(args, args.file)
    except (KubeError, ValueError) as exc:
        return _fail(exc)
    ns, name = ref(args, args.file)
    sys.stdout.write(f"object    {PLURAL}/{name} in {ns}\n")
    show(doc, sys.stdout)
    return 0


def _either(args: argparse.Namespace, text: str) -> ProfileDocument:
    """A profile from a file when ``text`` is one, else from the object it names."""
    return load(text) if Path(text).is_file() else _get(args, text)


def diff_main(args: argparse.Namespace) -> int:
    """OLD and NEW are each a file or an object: e.g. the object against its copy in Git."""
    try:
        old, new = _either(args, args.old), _either(args, args.new)
    except Exception as exc:  # ConfigError, KubeError, ObjectError, OSError
        sys.stderr.write(f"{exc}\n")
        return 2
    return diff(old, new, sys.stdout)


def approve_main(args: argparse.Namespace) -> int:
    ns, name = ref(args, args.file)
    by = args.by or getpass.getuser()
    seen: list[ProfileDocument] = []

    def change(obj: Obj) -> Optional[Obj]:
        doc = approved(from_object(obj), by, args.accept_taint, where=f"{ns}/{name}")
        seen.append(doc)
        return {**obj, "status": to_object(doc, ns)["status"]}

    try:
        _resources(args).update(name, change, ns, status=True)
    except (KubeError, ValueError) as exc:
        return _fail(exc)
    approval = seen[-1].status.approval
    assert approval is not None
    sys.stdout.write(f"approved {PLURAL}/{name} in {ns} ({approval.content_hash})\n")
    return 0


def export_main(args: argparse.Namespace) -> int:
    """``export --kube OUT``: every object of the namespace as a file under OUT."""
    out = Path(args.out or args.directory)
    try:
        items = _resources(args).list(args.namespace).items
    except (KubeError, ValueError) as exc:
        return _fail(exc)
    bad = 0
    for obj in items:
        try:
            doc = from_object(obj)
        except ObjectError as exc:
            sys.stderr.write(f"{exc}\n")
            bad += 1
            continue
        target = out / file_name(doc.metadata.workload)
        write_atomic(target, dump(doc))
        sys.stdout.write(f"{doc.metadata.workload} -> {target}\n")
    return 1 if bad else 0


def import_docs(args: argparse.Namespace, docs: list[ProfileDocument]) -> int:
    """Create each object, or update spec and status of the one that exists (guarded by the
    resourceVersion just read: a concurrent change fails that object, named)."""
    try:
        res = _resources(args)
    except KubeError as exc:
        return _fail(exc)
    bad = 0
    for doc in docs:
        obj = to_object(doc, args.namespace)
        name = obj["metadata"]["name"]
        try:
            try:
                rv = res.create(obj, args.namespace)["metadata"]["resourceVersion"]
            except AlreadyExists:
                rv = res.get(name, args.namespace)["metadata"]["resourceVersion"]
                rv = res.patch(name, spec_patch(obj), args.namespace,
                               rv)["metadata"]["resourceVersion"]
            res.patch_status(name, status_patch(obj), args.namespace, rv)
        except KubeError as exc:
            sys.stderr.write(f"{doc.metadata.workload}: {exc}\n")
            bad += 1
            continue
        sys.stdout.write(f"{doc.metadata.workload} -> {PLURAL}/{name} in {args.namespace}\n")
    return 1 if bad else 0


def install_crd_main(args: argparse.Namespace) -> int:
    """Create or update the WorkloadProfile CRD and wait until it is served."""
    try:
        install_crd(_client(args), CRD_FILE, timeout=args.timeout)
    except (KubeError, ValueError) as exc:
        return _fail(exc)
    sys.stdout.write(f"customresourcedefinition {PLURAL}.otelguard.dev established\n")
    return 0
