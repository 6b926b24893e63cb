"""The local request store for ``otelguard run`` (docs/response.md#requests): one JSON file per
request and the audit chain beside them, shared by the running pipeline and ``otelguard
respond`` through a file lock.

Layout of the directory::

    requests/<id>.json   the request (written to a temp name, fsynced, renamed, dir fsynced)
    audit.jsonl          the audit chain, one record per line, appended and fsynced
    intent.json          the transition being written (present only inside one)
    chain                the chain's id, made once
    lock                 flock(2): every read-modify-write holds it, in any process

A transition, under the lock: (1) ``intent.json`` names the request and the record's seq,
(2) the request file is replaced by the new state, (3) the record is appended to the chain,
(4) the intent is removed. Nothing is acknowledged (returned) before (3) is on disk. A crash
between (2) and (3) leaves the intent: the next locked operation, in whichever process, finds
the request file at the new state and appends the record the crash kept from the chain; a crash
before (2) finishes leaves the old file and the intent is dropped. So every transition that a
request file shows is in the chain exactly once, and none is in the chain that no file shows.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from otelguard import semconv as S
from otelguard.config import fsync_dir as _fsync_dir
from otelguard.config import write_atomic, write_durably
from otelguard.response.audit import GENESIS, AuditRecord, record_for
from otelguard.response.request import ResponseRequest, State, advance


class StoreError(Exception):
    """The store cannot do what was asked (no such request, a file it cannot read)."""


def _last_line(path: Path) -> Optional[bytes]:
    """The last complete line of ``path`` (None when empty or absent)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            end = fh.tell()
            chunk = 65536
            while True:
                start = max(0, end - chunk)
                fh.seek(start)
                data = fh.read(end - start)
                body = data.rstrip(b"\n")
                cut = body.rfind(b"\n")
                if cut >= 0 or start == 0:
                    return body[cut + 1:] or None
                chunk *= 4
    except FileNotFoundError:
        return None


class ChainedStore:
    """Requests kept somewhere (:meth:`_read`, :meth:`_write`, :meth:`_ids`: files here, custom
    resources in kube_store.py) and their audit chain in ``directory`` (see the module
    docstring: the intent makes a transition and its record one step across a crash).

    The stage ships the chain to the pipeline by reading it with :meth:`audit_since`, so
    transitions made by ``otelguard respond`` in another process reach Loki the same way.
    """

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.audit_path = self.directory / "audit.jsonl"
        self._intent = self.directory / "intent.json"
        self._clock = clock
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._lock_fd: Optional[int] = None
        chain_file = self.directory / "chain"
        self.chain = ""  # unknown until read: no recovery before
        with self.locked():
            if not chain_file.exists():
                write_atomic(chain_file, secrets.token_hex(8).encode())
            self.chain = chain_file.read_text().strip()
            if not self.audit_path.exists():
                write_atomic(self.audit_path, b"")
            self._recover()

    # --- the lock ----------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the store's lock (re-entrant in this thread); recovers a torn transition."""
        with self._thread_lock:
            if self._depth == 0:
                fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._lock_fd = fd
            self._depth += 1
            try:
                if self._depth == 1:
                    self._recover()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                    os.close(self._lock_fd)
                    self._lock_fd = None

    def _recover(self) -> None:
        if not self.chain:
            return
        try:
            intent = json.loads(self._intent.read_text())
        except FileNotFoundError:
            return
        except ValueError:
            intent = None  # torn while written: step (2) never started
        if intent is not None:
            req = self._read(str(intent["id"]))
            seq, head = self._head()
            if req is not None and req.history and len(req.history) == int(intent["n"]) \
                    and seq + 1 == int(intent["seq"]):
                self._append(record_for(req, req.history[-1], chain=self.chain, seq=seq + 1,
                                        prev_hash=head))
        self._intent.unlink()
        _fsync_dir(self.directory)

    # --- where requests are kept (subclasses) -------------------------------------------------

    def _read(self, rid: str) -> Optional[ResponseRequest]:
        raise NotImplementedError

    def _write(self, req: ResponseRequest) -> None:
        """Persist ``req`` (created when new); durable when this returns."""
        raise NotImplementedError

    def _ids(self) -> list[str]:
        raise NotImplementedError

    # --- requests ------------------------------------------------------------------------------

    def get(self, rid: str) -> Optional[ResponseRequest]:
        """The request ``rid``; a unique prefix of an id is enough."""
        with self.locked():
            req = self._read(rid)
            if req is not None:
                return req
            found = [i for i in self._ids() if i.startswith(rid)]
            if len(found) > 1:
                raise StoreError(f"{rid!r} names {len(found)} requests: "
                                 f"{', '.join(sorted(found)[:5])}")
            return self._read(found[0]) if found else None

    def requests(self) -> list[ResponseRequest]:
        with self.locked():
            out = [self._read(i) for i in self._ids()]
        return sorted((r for r in out if r is not None), key=lambda r: r.created)

    def save(self, req: ResponseRequest) -> None:
        """Persist a change that is not a transition (a step's outcome while Executing)."""
        with self.locked():
            current = self._read(req.id)
            if current is None or current.state != req.state or \
                    len(current.history) != len(req.history):
                raise StoreError(f"request {req.id} moved on since it was read")
            self._write(req)

    def create(self, req: ResponseRequest, *, by: str, reason: str = ""
               ) -> tuple[ResponseRequest, Optional[AuditRecord]]:
        """Propose ``req`` (state None -> Proposed); an id that exists is returned as it is
        (the same trigger seen again), with no record."""
        with self.locked():
            existing = self._read(req.id)
            if existing is not None:
                return existing, None
            return self._move(req, State.PROPOSED, by=by, reason=reason, at=self._clock())

    def transition(self, rid: str, to: State, *, by: str, reason: str = "",
                   check: Optional[Callable[[ResponseRequest], None]] = None,
                   **updates: Any) -> tuple[ResponseRequest, AuditRecord]:
        """Move request ``rid`` to ``to`` (IllegalTransition when the table forbids it);
        ``check(current)`` may raise to refuse based on the current state."""
        with self.locked():
            current = self._read(rid)
            if current is None:
                raise StoreError(f"no request {rid!r} in {self.directory}")
            if check is not None:
                check(current)
            req, record = self._move(current, to, by=by, reason=reason, at=self._clock(),
                                     **updates)
            assert record is not None
            return req, record

    def _move(self, current: ResponseRequest, to: State, *, by: str, reason: str, at: float,
              **updates: Any) -> tuple[ResponseRequest, Optional[AuditRecord]]:
        req = advance(current, to, by=by, reason=reason, at=at, **updates)
        seq, head = self._head()
        write_atomic(self._intent, json.dumps({"id": req.id, "n": len(req.history),
                                               "seq": seq + 1}).encode())
        self._write(req)
        record = record_for(req, req.history[-1], chain=self.chain, seq=seq + 1,
                            prev_hash=head)
        self._append(record)
        self._intent.unlink()
        return req, record

    # --- the chain -----------------------------------------------------------------------------

    def _head(self) -> tuple[int, str]:
        last = _last_line(self.audit_path)
        if last is None:
            return 0, GENESIS
        try:
            attrs = json.loads(last)["attributes"]
            return int(attrs[S.AUDIT_SEQ]), str(attrs[S.AUDIT_HASH])
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{self.audit_path}: last record unreadable ({exc}): the chain "
                             f"cannot be continued; `otelguard audit verify` it") from exc

    def _append(self, record: AuditRecord) -> None:
        line = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode() + b"\n"
        write_durably(self.audit_path, line, os.O_CREAT | os.O_APPEND)

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the chain's last record; (0, genesis) when empty."""
        with self.locked():
            return self._head()

    def audit_since(self, offset: int) -> tuple[list[AuditRecord], int]:
        """Records appended after byte ``offset`` of the chain file, and the new offset (only
        complete lines)."""
        try:
            with open(self.audit_path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return [], offset
        end = data.rfind(b"\n") + 1
        out = []
        for line in data[:end].splitlines():
            if line.strip():
                d = json.loads(line)
                out.append(AuditRecord(d["attributes"], d["body"], d.get("trace_id", "")))
        return out, offset + end


class LocalStore(ChainedStore):
    """Requests as ``requests/<id>.json`` beside the chain (``otelguard run``)."""

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        self.requests_dir = Path(directory) / "requests"
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(directory, clock)

    def _path(self, rid: str) -> Path:
        if not rid or "/" in rid or rid.startswith("."):
            raise StoreError(f"not a request id: {rid!r}")
        return self.requests_dir / f"{rid}.json"

    def _read(self, rid: str) -> Optional[ResponseRequest]:
        try:
            data = json.loads(self._path(rid).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(f"{self._path(rid)}: {exc}") from exc
        return ResponseRequest.from_json(data)

    def _ids(self) -> list[str]:
        return [p.stem for p in self.requests_dir.glob("*.json")]

    def _write(self, req: ResponseRequest) -> None:
        write_atomic(self._path(req.id), json.dumps(req.to_json(), sort_keys=True,
                                                    indent=1).encode())
