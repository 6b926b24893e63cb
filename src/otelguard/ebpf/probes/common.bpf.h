// Shared by every probe: the record header, the one ring buffer, in-kernel drop counting and
// the self-filter. The loader puts this after budget.bpf.h (the per-cgroup budget asked before
// every record), then each enabled probe's rendered C, and compiles them as one BPF program.
// Placeholders (OG_*) are filled by render().
//
// Rules for probe C (lockdown=confidentiality): only tracepoint fields (args->...), helpers and
// bpf_probe_read_user*(); never dereference a kernel struct, never bpf_probe_read_kernel.

#include <uapi/linux/ptrace.h>

#ifndef OG_RINGBUF_PAGES
#define OG_RINGBUF_PAGES 256
#endif

#define OG_COMM_LEN 16
#define OG_PATH_LEN 256

// Mirrored by otelguard.ebpf.probe.Header (ctypes). Every record starts with it.
struct og_hdr {
    u64 ktime_ns;     // bpf_ktime_get_ns() (CLOCK_MONOTONIC); user space converts to wall clock
    u64 cgroup_id;    // bpf_get_current_cgroup_id(): the cgroup v2 directory inode
    s64 ret;          // syscall return value (-errno on failure); 0 where there is none
    u32 type;         // OG_T_* record type (ranges per probe, see probe.py)
    u32 pid;          // tgid
    u32 tid;
    u32 uid;
    u32 gid;
    u32 size;         // total record size in bytes, header included
    char comm[OG_COMM_LEN];
};

BPF_RINGBUF_OUTPUT(og_events, OG_RINGBUF_PAGES);
// Index 0: records lost because the ring buffer was full (reserve failed); index 1: syscalls
// whose entry state could not be stashed for their exit (the stash map was full), so their
// record was never made (og_count_stash_drop).
BPF_PERCPU_ARRAY(og_drops, u64, 2);

// A process's generation: the ktime of the fork that made this tgid, written by the process
// probe's sched_process_fork for every new process on the machine (before any scope check: a
// container's first process is forked outside its cgroup); 0 for a process older than the
// sensor, one evicted from this LRU, or when the process probe is not loaded. Keys of the
// "report once per process" maps carry it: a reused pid is a new process even in the same
// cgroup running the same command (docs/architecture.md#kernel-facts).
BPF_TABLE("lru_hash", u32, u64, og_proc_gen, 32768);

static __always_inline u64 og_gen(u32 tgid) {
    u64 *g = og_proc_gen.lookup(&tgid);
    return g ? *g : 0;
}

// A process as a "report once per process" key names it: pids are reused (pid_max is 32768 on
// many nodes), and a new process with an old one's pid must not inherit its "seen" (it did: a
// container's first CAP_NET_ADMIN use went unreported when an earlier process with its pid had
// used it). The generation tells a reused pid; cgroup and comm still tell apart processes older
// than the sensor (generation 0).
struct og_proc_key {
    u64 cgroup;
    u64 gen;
    char comm[OG_COMM_LEN];
    u32 tgid;
    u32 _pad;
};

static __always_inline void og_proc_key_fill(struct og_proc_key *p) {
    p->tgid = bpf_get_current_pid_tgid() >> 32;
    p->gen = og_gen(p->tgid);
    p->cgroup = bpf_get_current_cgroup_id();
    bpf_get_current_comm(&p->comm, sizeof(p->comm));
}

// Index 0: the agent's own tgid, written by the loader before the probes attach. A map, not a
// placeholder, so the rendered text (the program cache's key, progcache.py) does not change with
// the agent's pid. An array lookup the verifier inlines: a few instructions per event.
BPF_ARRAY(og_self, u32, 1);

// Optional cgroup scope (SensorConfig.cgroup_scope): when OG_SCOPE_COUNT > 0, only tasks under
// one of the cgroups the loader puts in og_scope are observed (e.g. /kubepods.slice: containers
// only, host noise never reaches the ring buffer). One helper call per slot and event.
#ifndef OG_SCOPE_COUNT
#define OG_SCOPE_COUNT 0
#endif
#if OG_SCOPE_COUNT > 0
BPF_CGROUP_ARRAY(og_scope, OG_SCOPE_COUNT);
#endif

static __always_inline int og_out_of_scope(void) {
#if OG_SCOPE_COUNT > 0
#pragma unroll
    for (int i = 0; i < OG_SCOPE_COUNT; i++) {
        if (og_scope.check_current_task(i) == 1) { return 0; }
    }
    return 1;
#else
    return 0;
#endif
}

// True for events every probe ignores: our own process (og_self) and, when a cgroup scope is
// configured, tasks outside it. Probes call it first in every entry handler.
static __always_inline int og_is_self(void) {
    int zero = 0;
    u32 *self = og_self.lookup(&zero);
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    return (self && tgid == *self) || og_out_of_scope();
}

static __always_inline void og_count_drop(void) {
    int zero = 0;
    u64 *v = og_drops.lookup(&zero);
    if (v) { *v += 1; }
}

// A probe's `stash.update(...)` returned an error: the syscall goes unreported, counted.
static __always_inline void og_count_stash_drop(void) {
    int one = 1;
    u64 *v = og_drops.lookup(&one);
    if (v) { *v += 1; }
}

// Fill a record header in place (ring buffer memory or a stashed map value).
static __always_inline void og_fill_hdr_at(struct og_hdr *h, u32 size, u32 type, s64 ret,
                                           u64 now, u64 cgroup_id) {
    u64 pt = bpf_get_current_pid_tgid();
    u64 ug = bpf_get_current_uid_gid();
    h->ktime_ns = now;
    h->cgroup_id = cgroup_id;
    h->ret = ret;
    h->type = type;
    h->pid = pt >> 32;
    h->tid = (u32)pt;
    h->uid = (u32)ug;
    h->gid = ug >> 32;
    h->size = size;
    bpf_get_current_comm(&h->comm, sizeof(h->comm));
}

static __always_inline void og_fill_hdr(struct og_hdr *h, u32 size, u32 type, s64 ret) {
    og_fill_hdr_at(h, size, type, ret, bpf_ktime_get_ns(), bpf_get_current_cgroup_id());
}

// Reserve a record of `size` bytes and fill its header; NULL when the cgroup is over its budget
// (counted by og_budget_allow) or the ring buffer is full (a counted drop).
static __always_inline void *og_reserve(u32 size, u32 type, s64 ret) {
    u64 now = bpf_ktime_get_ns();
    u64 cgroup_id = bpf_get_current_cgroup_id();
    if (!og_budget_allow(type, cgroup_id, now)) { return 0; }
    struct og_hdr *h = og_events.ringbuf_reserve(size);
    if (!h) { og_count_drop(); return 0; }
    og_fill_hdr_at(h, size, type, ret, now, cgroup_id);
    return h;
}

// Copy a finished record (e.g. a map value stashed at syscall entry, header filled with
// og_fill_hdr at exit) into the ring buffer; over budget or a full ring buffer is a counted drop.
static __always_inline void og_output(void *rec, u32 size) {
    struct og_hdr *h = (struct og_hdr *)rec;
    if (!og_budget_allow(h->type, h->cgroup_id, h->ktime_ns)) { return; }
    if (og_events.ringbuf_output(rec, size, 0) != 0) { og_count_drop(); }
}
