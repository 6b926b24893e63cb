"""Events with a shared process part (ProcessAttrs, as the sensor makes them) export the same
OTLP as the same events with every attribute in one dict: logs equal as maps of attributes,
traces identical. Also: an event overriding a process key sends that key once, with its value;
writes through ``Event.attrs`` reach the encoder; the process block is encoded once."""

from __future__ import annotations

from otelguard import semconv as sc
from otelguard.ebpf.events import AttrValue, Event, ProcessAttrs
from otelguard.exporter.builder import OtlpBuilder
from otelguard.otlp.messages import attrs_dict
from tests.exporter.scenario import NODE, OBSERVED, T0, shell_session, sorted_attrs

# what the sensor keeps per event even though the key says "process" (ebpf/sensor.py)
_PER_EVENT = {sc.PROCESS_DURATION_NS, sc.PROCESS_COMM, sc.PROCESS_LINUX_CGROUP,
              sc.PROCESS_REAL_USER_ID}


def _split(events: list[Event]) -> list[Event]:
    """The same events, process keys moved into one ProcessAttrs per distinct process state."""
    shared: dict[str, ProcessAttrs] = {}
    out = []
    for e in events:
        attrs = e.attrs
        proc = {k: v for k, v in attrs.items()
                if k.startswith(("process.", "otelguard.process.")) and k not in _PER_EVENT}
        own = {k: v for k, v in attrs.items() if k not in proc}
        part = shared.setdefault(repr(sorted(proc.items())), ProcessAttrs(proc))
        out.append(Event(e.name, e.time_ns, e.pid, e.tid, e.syscall, e.ret, e.container_id,
                         e.pod_uid, e.cgroup_path, e.process_start_ns, e.root_pid,
                         e.root_start_ns, own, e.body, part))
    assert len(shared) < len(events)  # processes with several events share one object
    return out


def _builder() -> OtlpBuilder:
    return OtlpBuilder(NODE, clock=lambda: OBSERVED)


def _records(req: object) -> list[dict[str, object]]:
    return [dict(attrs_dict(r.attributes)) for rl in req.resource_logs  # type: ignore[attr-defined]
            for sl in rl.scope_logs for r in sl.log_records]


def test_split_events_merge_to_the_flat_attributes() -> None:
    flat, split = shell_session(), _split(shell_session())
    for f, s in zip(flat, split):
        assert s.process is not None and dict(s.items()) == f.attrs
        assert s.get(sc.PROCESS_EXECUTABLE_NAME) == f.attrs.get(sc.PROCESS_EXECUTABLE_NAME)
        assert s.get("no.such.key", 7) == 7
        assert s == f


def test_logs_and_traces_equal_with_and_without_process_part() -> None:
    flat_b, split_b = _builder(), _builder()
    flat = sorted_attrs(flat_b.logs(shell_session()))
    split_events = _split(shell_session())
    split = sorted_attrs(split_b.logs(split_events))
    assert split == flat
    assert all(e.process is not None and e.process.wire is not None for e in split_events)  # blocks were cached
    assert split_b.shutdown_traces() == flat_b.shutdown_traces()
    # a second batch over the cached blocks: still the same request
    assert sorted_attrs(_builder().logs(split_events)) == flat


def test_event_value_wins_over_process_part_and_is_sent_once() -> None:
    part = ProcessAttrs({sc.PROCESS_PID: 5, sc.PROCESS_EXECUTABLE_NAME: "sh"})
    own: dict[str, AttrValue] = {sc.PROCESS_EXECUTABLE_NAME: "busybox", sc.FILE_PATH: "/x"}
    e = Event(sc.EV_FILE_OPEN, T0, 5, 5, "openat", 0, attrs=own, process=part)
    req = _builder().logs([e])
    rec = req.resource_logs[0].scope_logs[0].log_records[0]
    keys = [kv.key for kv in rec.attributes]
    assert keys.count(sc.PROCESS_EXECUTABLE_NAME) == 1 and keys.count(sc.PROCESS_PID) == 1
    assert _records(req)[0][sc.PROCESS_EXECUTABLE_NAME] == "busybox"
    assert e.attrs[sc.PROCESS_EXECUTABLE_NAME] == "busybox"
    assert part.attrs[sc.PROCESS_EXECUTABLE_NAME] == "sh"  # the shared part is untouched


def test_write_through_attrs_reaches_the_record() -> None:
    part = ProcessAttrs({sc.PROCESS_PID: 5, sc.PROCESS_ARGS_COUNT: 2})
    e = Event(sc.EV_PROCESS_EXEC, T0, 5, 5, "execve", 0, attrs={}, process=part)
    e.attrs[sc.PROCESS_ARGS_COUNT] = 40  # as the process probe does for truncated argv
    got = _records(_builder().logs([e]))[0]
    assert got[sc.PROCESS_ARGS_COUNT] == 40 and part.attrs[sc.PROCESS_ARGS_COUNT] == 2
    other = Event(sc.EV_PROCESS_EXEC, T0 + 1, 5, 5, "execve", 0, attrs={}, process=part)
    assert _records(_builder().logs([other]))[0][sc.PROCESS_ARGS_COUNT] == 2
