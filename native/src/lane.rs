//! The native fast lane (`otelguard_native.Lane`): file-open records of processes it knows ->
//! final OTLP LogRecord bytes, without building a Python object per record.
//!
//! Python (src/otelguard/ebpf/lane.py) keeps it: the exporter registers, per pid, what the
//! Python path would put into that process's records (the encoded process attribute block,
//! the span ids, the Resource, the process start), the poll thread tells it the cgroups it
//! resolved and forgets a pid whenever the process table changes it (exec, fork, exit, chdir,
//! memfd, eviction). An entry is used only while younger than the TTL the sensor rebuilds a
//! process's attributes after, and never when it was built before the pid was last forgotten,
//! so the lane emits exactly the bytes the Python path would (tests/ebpf/test_lane.py).
//!
//! What it encodes: a successful open (record type 20, an open-family syscall) whose path as
//! passed is absolute, normalised UTF-8 (so it needs no cwd or dirfd), by a known pid in the
//! cgroup it was registered in. Anything else is handed back as the raw record, in order, for
//! the probes' Python decode. The record layout is `struct og_file_rec` (file.bpf.c), checked
//! against the ctypes mirror by lane.py before a Lane is made. The LogRecord's field order and
//! bytes follow exporter/wire.py's `LogsWireEncoder.record_into` for the event file.py's
//! `decode` and sensor.py's `EventContext.make_event` build from such a record.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

pub const T_OPEN: u32 = 20;
// struct og_hdr / og_file_rec offsets (lane.py compares them with file.FileRecord)
pub const OFF_KTIME: usize = 0;
pub const OFF_CGROUP: usize = 8;
pub const OFF_RET: usize = 16;
pub const OFF_TYPE: usize = 24;
pub const OFF_PID: usize = 28;
pub const OFF_UID: usize = 36;
pub const OFF_COMM: usize = 48;
pub const COMM_LEN: usize = 16;
pub const OFF_SC: usize = 72;
pub const OFF_FLAGS: usize = 80;
pub const OFF_MODE: usize = 88;
pub const OFF_REPEAT: usize = 100;
pub const OFF_PATH: usize = 112;
pub const PATH_LEN: usize = 256;
pub const RECORD_SIZE: usize = 624;

const O_WRITE_MASK: u64 = 0o3103; // O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND: file.py's test
const O_MODE_FLAGS: u64 = 0o100 | 0o20000000; // O_CREAT | O_TMPFILE: a mode is reported
const O_FLAGS: [(u64, &str); 17] = [
    (0o100, "O_CREAT"), (0o200, "O_EXCL"), (0o400, "O_NOCTTY"), (0o1000, "O_TRUNC"),
    (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"), (0o10000, "O_DSYNC"), (0o20000, "O_ASYNC"),
    (0o40000, "O_DIRECT"), (0o100000, "O_LARGEFILE"), (0o200000, "O_DIRECTORY"),
    (0o400000, "O_NOFOLLOW"), (0o1000000, "O_NOATIME"), (0o2000000, "O_CLOEXEC"),
    (0o4000000, "O_SYNC"), (0o10000000, "O_PATH"), (0o20000000, "O_TMPFILE"),
];

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The bytes of a C char array up to its first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    match b.iter().position(|&c| c == 0) {
        Some(end) => &b[..end],
        None => b,
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec out-pointer
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// file.py's `open_flag_names`: `O_WRONLY|O_CREAT|O_CLOEXEC`, unknown bits as hex.
pub fn open_flag_names(flags: u64) -> String {
    let mut names: Vec<String> =
        vec![["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][(flags & 3) as usize].to_string()];
    let mut rest = flags & !3;
    for (bit, name) in O_FLAGS {
        if rest & bit != 0 {
            names.push(name.to_string());
            rest &= !bit;
        }
    }
    if names.iter().any(|n| n == "O_TMPFILE") {
        names.retain(|n| n != "O_DIRECTORY"); // O_TMPFILE is __O_TMPFILE|O_DIRECTORY
    }
    if rest != 0 {
        names.push(format!("{rest:#x}"));
    }
    names.join("|")
}

/// What `openfilter.normalize` leaves unchanged, for an absolute path: `/`, or `/` then
/// components none of which is empty, `.` or `..`.
pub fn is_normal_absolute(p: &[u8]) -> bool {
    if p.first() != Some(&b'/') {
        return false;
    }
    if p.len() == 1 {
        return true;
    }
    p[1..].split(|&c| c == b'/').all(|part| !part.is_empty() && part != b"." && part != b"..")
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7F) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

fn put_len(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

/// A LogRecord `attributes` field (tag 6): KeyValue{key, AnyValue{string_value}}.
fn attr_str(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let kv = varint_len(key.len() as u64);
    let any = 1 + varint_len(value.len() as u64) + value.len();
    let inner = 1 + kv + key.len() + 1 + varint_len(any as u64) + any;
    out.push(0x32);
    put_varint(out, inner as u64);
    put_len(out, 0x0A, key);
    out.push(0x12);
    put_varint(out, any as u64);
    put_len(out, 0x0A, value);
}

/// A LogRecord `attributes` field holding an int_value (a negative one as its 64-bit two's
/// complement, as protobuf and otlp/wire.py's varint do).
fn attr_int(out: &mut Vec<u8>, key: &[u8], value: i64) {
    let v = value as u64;
    let any = 1 + varint_len(v);
    let inner = 1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any as u64) + any;
    out.push(0x32);
    put_varint(out, inner as u64);
    put_len(out, 0x0A, key);
    out.push(0x12);
    put_varint(out, any as u64);
    out.push(0x18);
    put_varint(out, v);
}

/// What the exporter registered for one pid: the Python path's inputs for its records.
struct Entry {
    built_ns: u64,   // CLOCK_MONOTONIC when the process attributes were built
    start_ns: i64,   // process start, wall clock (0: unknown)
    cgroup: Cgroup,  // the Resource and cgroup path its records were in
    block: Vec<u8>,  // the encoded process attribute block (ProcessAttrs.wire)
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
}

#[derive(Clone, PartialEq, Eq)]
struct Cgroup {
    path: String,
    container_id: String,
    pod_uid: String,
}

/// A run of records of one process the lane encoded, in ring order: the exporter appends
/// `data` (LogRecord fields, tag 2, back to back) to the Resource's records and tells its span
/// tracker once.
#[pyclass(module = "otelguard_native", frozen, get_all)]
pub struct LaneRun {
    pub container_id: String,
    pub pod_uid: String,
    pub pid: u32,
    pub process_start_ns: i64,
    pub count: usize,
    pub last_time_ns: i64,
    pub data: Py<PyBytes>,
}

#[pymethods]
impl LaneRun {
    fn __repr__(&self) -> String {
        format!("LaneRun(pid={}, count={}, container_id={:?})", self.pid, self.count,
                self.container_id)
    }
}

/// An open run being filled by `Lane::take`.
struct Pending {
    pid: u32,
    container_id: String,
    pod_uid: String,
    process_start_ns: i64,
    count: usize,
    last_time_ns: i64,
    data: Vec<u8>,
}

#[pyclass(module = "otelguard_native")]
pub struct Lane {
    keys: Vec<String>,
    uid_prefix: String,
    seq: u64,
    syscalls: Vec<Option<String>>, // file.py SYSCALLS index -> name, for the open family
    read_prefixes: Vec<Vec<u8>>,
    read_paths: HashSet<Vec<u8>>,
    ttl_ns: u64,
    offset_ns: i64, // wall - CLOCK_MONOTONIC, the sensor's KernelClock offset
    entries: HashMap<u32, Entry>,
    forgotten: HashMap<u32, u64>, // pid -> CLOCK_MONOTONIC of its last invalidation
    floor_ns: u64, // every pid counts as forgotten at this time (after a storm of changes)
    pruned_ns: u64, // when `forgotten` was last pruned
    cgroups: HashMap<u64, Cgroup>,
    flag_names: HashMap<u64, String>,
    max_entries: usize,
    encoded: u64,
    refused: u64,
    pending: Option<Pending>,
    scratch: Vec<u8>, // one record's bytes, reused
    text: String,     // body and uid text, reused
}

// indexes into Lane::keys: the event name and the attribute keys, as lane.py passes them
// (from otelguard.semconv, so no key is spelled twice)
const K_EVENT_NAME: usize = 0;
const K_REPEAT: usize = 1;
const K_OPEN_FLAGS: usize = 2;
const K_MODE: usize = 3;
const K_FD: usize = 4;
const K_PATH: usize = 5;
const K_RAW_PATH: usize = 6;
const K_NAME: usize = 7;
const K_DIRECTORY: usize = 8;
const K_DURATION: usize = 9;
const K_COMM: usize = 10;
const K_SYSCALL: usize = 11;
const K_RET: usize = 12;
const K_UID: usize = 13;
const K_CGROUP: usize = 14;
const K_REAL_UID: usize = 15;
pub const KEY_COUNT: usize = 16;
const FORGOTTEN_MAX: usize = 65536;

impl Lane {
    /// The final LogRecord field for `rec`, appended to the pending run, or false: Python's.
    fn encode(&mut self, rec: &[u8], observed_ns: i64) -> bool {
        if rec.len() < RECORD_SIZE || u32_at(rec, OFF_TYPE) != T_OPEN {
            return false;
        }
        let ret = u64_at(rec, OFF_RET) as i64;
        if ret < 0 {
            return false; // error.type and strerror: Python's
        }
        let sc = u32_at(rec, OFF_SC) as usize;
        let syscall: &str = match self.syscalls.get(sc) {
            Some(Some(name)) => name,
            _ => return false,
        };
        let pid = u32_at(rec, OFF_PID);
        let entry = match self.entries.get(&pid) {
            Some(e) => e,
            None => return false,
        };
        if monotonic_ns().saturating_sub(entry.built_ns) >= self.ttl_ns {
            return false;
        }
        match self.cgroups.get(&u64_at(rec, OFF_CGROUP)) {
            Some(cg) if *cg == entry.cgroup => {}
            _ => return false,
        }
        let raw = c_str(&rec[OFF_PATH..OFF_PATH + PATH_LEN]);
        let path = match std::str::from_utf8(raw) {
            Ok(p) if is_normal_absolute(raw) => p,
            _ => return false,
        };
        let comm = match std::str::from_utf8(c_str(&rec[OFF_COMM..OFF_COMM + COMM_LEN])) {
            Ok(c) => c,
            Err(_) => return false, // Python escapes it (backslashreplace)
        };
        let flags = u64_at(rec, OFF_FLAGS);
        if flags & O_WRITE_MASK == 0 && !path.contains("../") && !self.read_wanted(raw) {
            return false; // Python drops it as filtered
        }
        let repeat = u32_at(rec, OFF_REPEAT);
        let wall = (u64_at(rec, OFF_KTIME) as i64).wrapping_add(self.offset_ns);
        let mut uncached = None;
        if !self.flag_names.contains_key(&flags) {
            let n = open_flag_names(flags);
            if self.flag_names.len() < 4096 {
                self.flag_names.insert(flags, n);
            } else {
                uncached = Some(n);
            }
        }
        let flag_names: &str = match &uncached {
            Some(n) => n,
            None => &self.flag_names[&flags],
        };
        let entry = &self.entries[&pid];
        let keys = &self.keys;
        let k = |i: usize| keys[i].as_bytes();
        // scratch buffers kept across records: no allocation per record once warm
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let _ = write!(text, "open {path} {flag_names}");
        if repeat != 0 {
            let _ = write!(text, " (+{repeat} identical)");
        }
        // the record's fields in record_into's order; its own attributes in decode's order
        let mut r = std::mem::take(&mut self.scratch);
        r.clear();
        r.push(0x09);
        r.extend_from_slice(&(wall as u64).to_le_bytes());
        r.push(0x59);
        r.extend_from_slice(&(observed_ns as u64).to_le_bytes());
        r.extend_from_slice(b"\x10\x09\x1a\x04INFO");
        let b = text.as_bytes();
        r.push(0x2A);
        put_varint(&mut r, (1 + varint_len(b.len() as u64) + b.len()) as u64);
        put_len(&mut r, 0x0A, b);
        r.extend_from_slice(&entry.block);
        if repeat != 0 {
            attr_int(&mut r, k(K_REPEAT), repeat as i64);
        }
        attr_str(&mut r, k(K_OPEN_FLAGS), flag_names.as_bytes());
        if flags & O_MODE_FLAGS != 0 {
            let m = u32_at(rec, OFF_MODE) & 0o7777; // "{:04o}": four octal digits
            let digits = [b'0' + (m >> 9 & 7) as u8, b'0' + (m >> 6 & 7) as u8,
                          b'0' + (m >> 3 & 7) as u8, b'0' + (m & 7) as u8];
            attr_str(&mut r, k(K_MODE), &digits);
        }
        attr_int(&mut r, k(K_FD), ret);
        attr_str(&mut r, k(K_PATH), raw);
        if !raw.is_empty() {
            attr_str(&mut r, k(K_RAW_PATH), raw);
        }
        let cut = path.rfind('/').unwrap_or(0);
        attr_str(&mut r, k(K_NAME), path[cut + 1..].as_bytes());
        attr_str(&mut r, k(K_DIRECTORY), if cut == 0 { b"/" } else { path[..cut].as_bytes() });
        if entry.start_ns != 0 {
            let duration = if wall > entry.start_ns { wall - entry.start_ns } else { 0 };
            attr_int(&mut r, k(K_DURATION), duration);
        }
        attr_str(&mut r, k(K_COMM), comm.as_bytes());
        attr_str(&mut r, k(K_SYSCALL), syscall.as_bytes());
        attr_int(&mut r, k(K_RET), ret);
        self.seq += 1;
        text.clear();
        let _ = write!(text, "{}-{:x}", self.uid_prefix, self.seq);
        attr_str(&mut r, k(K_UID), text.as_bytes());
        if !entry.cgroup.path.is_empty() {
            attr_str(&mut r, k(K_CGROUP), entry.cgroup.path.as_bytes());
        }
        attr_int(&mut r, k(K_REAL_UID), u32_at(rec, OFF_UID) as i64);
        if !entry.trace_id.is_empty() {
            r.push(0x4A);
            r.push(0x10);
            r.extend_from_slice(&entry.trace_id);
        }
        if !entry.span_id.is_empty() {
            r.push(0x52);
            r.push(0x08);
            r.extend_from_slice(&entry.span_id);
        }
        put_len(&mut r, 0x62, k(K_EVENT_NAME));
        let size = r.len();
        let run = self.pending.get_or_insert_with(|| Pending {
            pid, container_id: entry.cgroup.container_id.clone(),
            pod_uid: entry.cgroup.pod_uid.clone(), process_start_ns: entry.start_ns, count: 0,
            last_time_ns: wall, data: Vec::with_capacity(64 * (size + 4)),
        });
        run.data.push(0x12);
        put_varint(&mut run.data, size as u64);
        run.data.extend_from_slice(&r);
        run.count += 1;
        run.last_time_ns = wall;
        self.encoded += 1;
        self.scratch = r;
        self.text = text;
        true
    }

    fn read_wanted(&self, path: &[u8]) -> bool {
        self.read_paths.contains(path) || self.read_prefixes.iter().any(|p| path.starts_with(p))
    }

    /// Close the pending run into `out` as a LaneRun.
    fn flush(&mut self, py: Python<'_>, out: &Bound<'_, PyList>) -> PyResult<()> {
        if let Some(run) = self.pending.take() {
            out.append(LaneRun {
                container_id: run.container_id, pod_uid: run.pod_uid, pid: run.pid,
                process_start_ns: run.process_start_ns, count: run.count,
                last_time_ns: run.last_time_ns, data: PyBytes::new(py, &run.data).unbind(),
            })?;
        }
        Ok(())
    }

    /// One record into `out`: appended to the pending run when the lane encodes it (a record
    /// of another pid first closes the run), else the run is closed and `raw()` appended.
    pub fn take<'py, F>(&mut self, py: Python<'py>, out: &Bound<'py, PyList>, rec: &[u8],
                        observed_ns: i64, raw: F) -> PyResult<()>
    where F: FnOnce() -> Bound<'py, PyAny> {
        if let Some(run) = &self.pending {
            if rec.len() >= RECORD_SIZE && u32_at(rec, OFF_PID) != run.pid {
                self.flush(py, out)?;
            }
        }
        if self.encode(rec, observed_ns) {
            return Ok(());
        }
        self.flush(py, out)?;
        self.refused += 1;
        out.append(raw())
    }

    pub fn finish(&mut self, py: Python<'_>, out: &Bound<'_, PyList>) -> PyResult<()> {
        self.flush(py, out)
    }

}

#[pymethods]
impl Lane {
    /// `syscalls`: file.py's SYSCALLS by index, the name for the open family, else None;
    /// `read_prefixes`/`read_paths`: the sensor's read filter (file.py re-checks read-only
    /// opens against it); `ttl_ns`: the sensor's process-attribute lifetime.
    /// `keys`: the event name, then the attribute keys in the order of the K_* indexes.
    #[new]
    fn new(keys: Vec<String>, uid_prefix: String, syscalls: Vec<Option<String>>,
           read_prefixes: Vec<String>, read_paths: Vec<String>, ttl_ns: u64,
           max_entries: usize) -> PyResult<Self> {
        if keys.len() != KEY_COUNT {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "Lane needs {KEY_COUNT} keys, got {}", keys.len())));
        }
        Ok(Lane {
            keys, uid_prefix, seq: 0, syscalls,
            read_prefixes: read_prefixes.into_iter().map(String::into_bytes).collect(),
            read_paths: read_paths.into_iter().map(String::into_bytes).collect(),
            ttl_ns, offset_ns: 0, entries: HashMap::new(), forgotten: HashMap::new(), floor_ns: 0,
            pruned_ns: 0,
            cgroups: HashMap::new(), flag_names: HashMap::new(), max_entries,
            encoded: 0, refused: 0, pending: None, scratch: Vec::new(), text: String::new(),
        })
    }

    /// The next record sequence number, shared with the Python path (`log.record.uid`).
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The sensor's wall-clock offset (KernelClock), set before each batch.
    fn set_offset(&mut self, offset_ns: i64) {
        self.offset_ns = offset_ns;
    }

    /// What the sensor's cgroup resolver says about `cgroup_id` now.
    fn note_cgroup(&mut self, cgroup_id: u64, path: String, container_id: String,
                   pod_uid: String) {
        let cg = Cgroup { path, container_id, pod_uid };
        if self.cgroups.get(&cgroup_id) != Some(&cg) {
            if self.cgroups.len() >= 16384 {
                self.cgroups.clear();
            }
            self.cgroups.insert(cgroup_id, cg);
        }
    }

    /// The process table changed `pid` (exec, fork, exit, chdir, memfd, eviction): no record
    /// of it is encoded until the exporter registers attributes built after this.
    fn forget(&mut self, pid: u32) {
        self.entries.remove(&pid);
        let now = monotonic_ns();
        if self.forgotten.len() >= FORGOTTEN_MAX / 2
            && now.saturating_sub(self.pruned_ns) >= self.ttl_ns {
            // at most once per TTL: changes older than the TTL refuse nothing the age test
            // does not refuse already
            let ttl = self.ttl_ns;
            self.forgotten.retain(|_, at| now.saturating_sub(*at) < ttl);
            self.pruned_ns = now;
        }
        if self.forgotten.len() >= FORGOTTEN_MAX {
            // a storm of changes: forget every pid at once instead (nothing built before now
            // is registered), which keeps this O(1) per call
            self.forgotten.clear();
            self.entries.clear();
            self.floor_ns = now;
            return;
        }
        self.forgotten.insert(pid, now);
    }

    /// Register what `pid`'s records carry; false (refused) when the attributes were built
    /// before the pid was last forgotten, or are older than the TTL already.
    #[pyo3(signature = (pid, built_ns, start_ns, cgroup_path, container_id, pod_uid, block,
                        trace_id, span_id))]
    fn register(&mut self, pid: u32, built_ns: u64, start_ns: i64, cgroup_path: String,
                container_id: String, pod_uid: String, block: &[u8], trace_id: &[u8],
                span_id: &[u8]) -> bool {
        let now = monotonic_ns();
        if built_ns <= self.floor_ns || self.forgotten.get(&pid).is_some_and(|at| *at >= built_ns)
            || now.saturating_sub(built_ns) >= self.ttl_ns {
            return false;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&pid) {
            let ttl = self.ttl_ns;
            self.entries.retain(|_, e| now.saturating_sub(e.built_ns) < ttl);
            if self.entries.len() >= self.max_entries {
                return false;
            }
        }
        self.entries.insert(pid, Entry {
            built_ns, start_ns,
            cgroup: Cgroup { path: cgroup_path, container_id, pod_uid },
            block: block.to_vec(), trace_id: trace_id.to_vec(), span_id: span_id.to_vec(),
        });
        true
    }

    /// Whether `pid` has a registered entry (young enough to be used).
    fn knows(&self, pid: u32) -> bool {
        self.entries.get(&pid)
            .is_some_and(|e| monotonic_ns().saturating_sub(e.built_ns) < self.ttl_ns)
    }

    /// `records` in order as items: LaneRun for runs the lane encoded, the record itself
    /// (the same bytes object) for Python.
    fn process<'py>(&mut self, py: Python<'py>, records: Vec<Bound<'py, PyBytes>>,
                    observed_ns: i64) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for rec in records {
            let data = rec.as_bytes();
            self.take(py, &out, data, observed_ns, || rec.clone().into_any())?;
        }
        self.finish(py, &out)?;
        Ok(out)
    }

    /// Records encoded so far.
    #[getter]
    fn encoded(&self) -> u64 {
        self.encoded
    }

    /// Records handed back to Python so far.
    #[getter]
    fn refused(&self) -> u64 {
        self.refused
    }

    /// Registered pids.
    #[getter]
    fn size(&self) -> usize {
        self.entries.len()
    }
}
