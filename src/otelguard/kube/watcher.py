"""Keep up with one kind of custom resource: list, then watch from the list's resourceVersion,
relist on 410 Gone, back off on any other error (the "reflector" of client-go, for
:class:`~otelguard.kube.custom.CustomResources`).

The caller's callbacks run on the watcher's thread: ``on_list(items)`` after each (re)list with
the complete set, ``on_event(type, obj)`` for each ADDED/MODIFIED/DELETED. They must be quick
(store, don't work). ``stop()`` closes the open watch, so it returns within a second.
"""

from __future__ import annotations

import logging
import random
import threading
from typing import Callable, Optional

from otelguard.kube.custom import CustomResources, Watch, resource_version
from otelguard.kube.errors import Expired, KubeError
from otelguard.kube.stream import Obj

log = logging.getLogger(__name__)


class ObjectWatcher:
    """One thread keeping ``on_list``/``on_event`` current for ``namespace`` (all when None)."""

    def __init__(self, resources: CustomResources, namespace: Optional[str],
                 on_list: Callable[[list[Obj]], None],
                 on_event: Callable[[str, Obj], None],
                 watch_timeout_seconds: int = 300, max_backoff_seconds: float = 5.0) -> None:
        self._resources, self._namespace = resources, namespace
        self._on_list, self._on_event = on_list, on_event
        self._watch_timeout = watch_timeout_seconds
        self._max_backoff = max_backoff_seconds
        self._stop = threading.Event()
        self._watch: Optional[Watch] = None
        self._lock = threading.Lock()
        self._thread: Optional[threading.Thread] = None
        self.synced = threading.Event()  # set after the first list reached on_list
        self.errors = 0
        self.last_error = ""

    def start(self, resource_version: str = "") -> None:
        """Start the thread; with ``resource_version`` (from a list the caller made itself) it
        watches from there without listing first."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(resource_version,),
                                        name=f"kube-watch-{self._resources.plural}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self, rv: str) -> None:
        backoff = 0.2
        if rv:
            self.synced.set()
        while not self._stop.is_set():
            try:
                if not rv:
                    listed = self._resources.list(self._namespace)
                    rv = listed.resource_version
                    self._on_list(listed.items)
                    self.synced.set()
                watch = self._resources.watch(self._namespace, rv,
                                              int(self._watch_timeout * (1 + random.random())))
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():
                    watch.close()
                for event_type, obj in watch:
                    rv = resource_version(obj) or rv
                    if event_type != "BOOKMARK":
                        self._on_event(event_type, obj)
                    backoff = 0.2
                # the server ended the watch (timeout_seconds): watch again from rv at once
            except Expired:
                log.info("%s: resourceVersion %s expired; relisting", self._resources.plural, rv)
                rv = ""
            except (KubeError, ValueError) as exc:  # API and JSON errors: back off, retry
                if self._stop.is_set():
                    break
                self.errors += 1
                self.last_error = str(exc)[:300]
                log.warning("%s: %s; retrying in %.1fs", self._resources.plural,
                            self.last_error, backoff)
                self._stop.wait(backoff * (0.5 + random.random() / 2))
                backoff = min(self._max_backoff, backoff * 2)
            finally:
                with self._lock:
                    self._watch = None
