// Privilege probe: uid/gid changes, capabilities, ptrace, signals, namespaces, mounts, kernel
// modules, bpf(), memfd_create and dup/dup2/dup3 onto stdio. Mirrored by otelguard/ebpf/privilege.py.
//
// render() prepends OG_PRIV_HAVE_<group> (1 when every tracepoint of the group exists, else 0).
// Syscalls are recorded at exit so each record carries the return value; arguments are saved at
// entry (user strings are read at exit, while the caller's memory is still the same).

#include <uapi/linux/capability.h>  // cap_user_*_t in the capset tracepoint's argument struct

#define OG_T_PRIV_SETUID 60
#define OG_T_PRIV_SETGID 61
#define OG_T_PRIV_CAPSET 62
#define OG_T_PRIV_CAPABLE 63
#define OG_T_PRIV_PTRACE 64
#define OG_T_PRIV_KILL 65
#define OG_T_PRIV_UNSHARE 66
#define OG_T_PRIV_SETNS 67
#define OG_T_PRIV_MOUNT 68
#define OG_T_PRIV_MODULE 69
#define OG_T_PRIV_BPF 70
#define OG_T_PRIV_MEMFD 71
#define OG_T_PRIV_DUP 72

// og_priv_args.which: the syscall of a family (mirrored in privilege.py)
#define OG_PRIV_SETUID 0
#define OG_PRIV_SETREUID 1
#define OG_PRIV_SETRESUID 2
#define OG_PRIV_SETFSUID 3
#define OG_PRIV_KILL 0
#define OG_PRIV_TKILL 1
#define OG_PRIV_TGKILL 2
#define OG_PRIV_INIT_MODULE 0
#define OG_PRIV_FINIT_MODULE 1
#define OG_PRIV_DUP2 0
#define OG_PRIV_DUP3 1
#define OG_PRIV_DUP 2

#define OG_PRIV_MNT_SRC 128
#define OG_PRIV_MNT_DST 256
#define OG_PRIV_MNT_FS 32
#define OG_PRIV_NAME 64

struct og_priv_args {
    u64 a[4];
    u32 which;
    u32 type;                       // OG_T_PRIV_* of the exit record
};

struct og_priv_id_rec {             // SETUID / SETGID; ids not passed are (u32)-1
    struct og_hdr h;
    u32 which;
    u32 ids[3];
};

struct og_priv_capset_rec {         // CAPSET: the sets the caller asked for
    struct og_hdr h;
    u32 version;
    s32 target_pid;
    u32 effective[2];
    u32 permitted[2];
    u32 inheritable[2];
    u32 read_ok;                    // 1 when the user header and data were readable
    u32 _pad;
};

struct og_priv_capable_rec {        // CAPABLE; hdr.ret = the check's result (0 or -EPERM)
    struct og_hdr h;
    s32 cap;
    u32 _pad;
};

struct og_priv_args_rec {           // PTRACE, KILL, UNSHARE, SETNS, BPF, DUP: integer arguments
    struct og_hdr h;
    u64 a[4];
    u32 which;
    u32 _pad;
};

struct og_priv_mount_rec {
    struct og_hdr h;
    u64 flags;
    char source[OG_PRIV_MNT_SRC];
    char target[OG_PRIV_MNT_DST];
    char fstype[OG_PRIV_MNT_FS];
};

struct og_priv_name_rec {           // MODULE (parameter string), MEMFD (name)
    struct og_hdr h;
    u64 a[3];
    u32 which;
    u32 _pad;
    char name[OG_PRIV_NAME];
};

struct og_priv_cap_key {
    struct og_proc_key p;  // the process (common.bpf.h: pids are reused)
    s32 cap;
    u32 denied;
};

struct og_priv_cap_data {           // struct __user_cap_data_struct
    u32 effective;
    u32 permitted;
    u32 inheritable;
};

BPF_HASH(og_priv_args_map, u64, struct og_priv_args, 10240);
// cap_capable runs on nearly every privileged kernel path: report each (process, capability,
// granted/denied) once (a process: og_priv_cap_key). LRU, so a process that cycles through
// more than fit is reported again.
BPF_TABLE("lru_hash", struct og_priv_cap_key, u8, og_priv_caps_seen, 16384);

static __always_inline int og_priv_save(u32 type, u32 which, u64 a0, u64 a1, u64 a2, u64 a3) {
    if (og_is_self()) { return 0; }
    struct og_priv_args a = {};
    a.type = type;
    a.which = which;
    a.a[0] = a0;
    a.a[1] = a1;
    a.a[2] = a2;
    a.a[3] = a3;
    u64 id = bpf_get_current_pid_tgid();
    if (og_priv_args_map.update(&id, &a)) { og_count_stash_drop(); }
    return 0;
}

// Pop the saved arguments of this thread's syscall; 0 when entry was not recorded or the saved
// entry belongs to another syscall (an exit that never fired, e.g. a thread killed mid-call).
static __always_inline int og_priv_take(struct og_priv_args *out, u32 type) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_priv_args *a = og_priv_args_map.lookup(&id);
    if (!a) { return 0; }
    __builtin_memcpy(out, a, sizeof(*out));
    og_priv_args_map.delete(&id);
    return out->type == type;
}

static __always_inline int og_priv_exit_ids(s64 ret, u32 type) {
    struct og_priv_args a;
    if (!og_priv_take(&a, type)) { return 0; }
    struct og_priv_id_rec *r = og_reserve(sizeof(*r), a.type, ret);
    if (!r) { return 0; }
    r->which = a.which;
    r->ids[0] = (u32)a.a[0];
    r->ids[1] = (u32)a.a[1];
    r->ids[2] = (u32)a.a[2];
    og_events.ringbuf_submit(r, 0);
    return 0;
}

static __always_inline int og_priv_exit_args(s64 ret, u32 type) {
    struct og_priv_args a;
    if (!og_priv_take(&a, type)) { return 0; }
    struct og_priv_args_rec *r = og_reserve(sizeof(*r), a.type, ret);
    if (!r) { return 0; }
    __builtin_memcpy(r->a, a.a, sizeof(r->a));
    r->which = a.which;
    r->_pad = 0;
    og_events.ringbuf_submit(r, 0);
    return 0;
}

#define OG_PRIV_NONE 0xffffffffULL

#if OG_PRIV_HAVE_SETUID
TRACEPOINT_PROBE(syscalls, sys_enter_setuid) {
    return og_priv_save(OG_T_PRIV_SETUID, OG_PRIV_SETUID, (u32)args->uid, OG_PRIV_NONE,
                        OG_PRIV_NONE, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setuid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETUID); }
#endif
#if OG_PRIV_HAVE_SETREUID
TRACEPOINT_PROBE(syscalls, sys_enter_setreuid) {
    return og_priv_save(OG_T_PRIV_SETUID, OG_PRIV_SETREUID, (u32)args->ruid, (u32)args->euid,
                        OG_PRIV_NONE, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setreuid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETUID); }
#endif
#if OG_PRIV_HAVE_SETRESUID
TRACEPOINT_PROBE(syscalls, sys_enter_setresuid) {
    return og_priv_save(OG_T_PRIV_SETUID, OG_PRIV_SETRESUID, (u32)args->ruid, (u32)args->euid,
                        (u32)args->suid, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setresuid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETUID); }
#endif
#if OG_PRIV_HAVE_SETFSUID
TRACEPOINT_PROBE(syscalls, sys_enter_setfsuid) {
    return og_priv_save(OG_T_PRIV_SETUID, OG_PRIV_SETFSUID, (u32)args->uid, OG_PRIV_NONE,
                        OG_PRIV_NONE, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setfsuid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETUID); }
#endif
#if OG_PRIV_HAVE_SETGID
TRACEPOINT_PROBE(syscalls, sys_enter_setgid) {
    return og_priv_save(OG_T_PRIV_SETGID, OG_PRIV_SETUID, (u32)args->gid, OG_PRIV_NONE,
                        OG_PRIV_NONE, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setgid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETGID); }
#endif
#if OG_PRIV_HAVE_SETREGID
TRACEPOINT_PROBE(syscalls, sys_enter_setregid) {
    return og_priv_save(OG_T_PRIV_SETGID, OG_PRIV_SETREUID, (u32)args->rgid, (u32)args->egid,
                        OG_PRIV_NONE, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setregid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETGID); }
#endif
#if OG_PRIV_HAVE_SETRESGID
TRACEPOINT_PROBE(syscalls, sys_enter_setresgid) {
    return og_priv_save(OG_T_PRIV_SETGID, OG_PRIV_SETRESUID, (u32)args->rgid, (u32)args->egid,
                        (u32)args->sgid, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setresgid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETGID); }
#endif
#if OG_PRIV_HAVE_SETFSGID
TRACEPOINT_PROBE(syscalls, sys_enter_setfsgid) {
    return og_priv_save(OG_T_PRIV_SETGID, OG_PRIV_SETFSUID, (u32)args->gid, OG_PRIV_NONE,
                        OG_PRIV_NONE, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setfsgid) { return og_priv_exit_ids(args->ret, OG_T_PRIV_SETGID); }
#endif

#if OG_PRIV_HAVE_CAPSET
TRACEPOINT_PROBE(syscalls, sys_enter_capset) {
    return og_priv_save(OG_T_PRIV_CAPSET, 0, (u64)args->header, (u64)args->data, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_capset) {
    struct og_priv_args a;
    if (!og_priv_take(&a, OG_T_PRIV_CAPSET)) { return 0; }
    struct og_priv_capset_rec *r = og_reserve(sizeof(*r), OG_T_PRIV_CAPSET, args->ret);
    if (!r) { return 0; }
    u32 hdr[2] = {};
    struct og_priv_cap_data d[2] = {};
    r->read_ok = bpf_probe_read_user(hdr, sizeof(hdr), (const void *)a.a[0]) == 0
        && bpf_probe_read_user(d, sizeof(d), (const void *)a.a[1]) == 0;
    r->version = hdr[0];
    r->target_pid = (s32)hdr[1];
    r->effective[0] = d[0].effective;
    r->effective[1] = d[1].effective;
    r->permitted[0] = d[0].permitted;
    r->permitted[1] = d[1].permitted;
    r->inheritable[0] = d[0].inheritable;
    r->inheritable[1] = d[1].inheritable;
    r->_pad = 0;
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif

#if OG_PRIV_HAVE_CAPABLE
TRACEPOINT_PROBE(capability, cap_capable) {
    if (og_is_self()) { return 0; }
    struct og_priv_cap_key k = {};
    og_proc_key_fill(&k.p);
    k.cap = args->cap;
    k.denied = args->ret != 0;
    // Lock-free lookup first: nearly every check was seen before, and a failing LRU insert
    // still pops and pushes back an LRU node (~0.6 us vs ~0.1 us per check, BPF run stats
    // in bench/agent_overhead.py). A race between two first checks is settled by the insert.
    if (og_priv_caps_seen.lookup(&k)) { return 0; }
    u8 one = 1;
    // insert-if-absent: only the first check of this (process, cap, outcome) goes out
    if (og_priv_caps_seen.insert(&k, &one) != 0) { return 0; }
    struct og_priv_capable_rec *r = og_reserve(sizeof(*r), OG_T_PRIV_CAPABLE, args->ret);
    if (!r) { return 0; }
    r->cap = args->cap;
    r->_pad = 0;
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif

#if OG_PRIV_HAVE_PTRACE
TRACEPOINT_PROBE(syscalls, sys_enter_ptrace) {
    return og_priv_save(OG_T_PRIV_PTRACE, 0, (u64)args->request, (u64)args->pid,
                        (u64)args->addr, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_ptrace) { return og_priv_exit_args(args->ret, OG_T_PRIV_PTRACE); }
#endif

// Signals: signal 0 (an existence probe) and signals a process sends to itself (Go's
// preemption SIGURG, raise()) stay in the kernel.
#if OG_PRIV_HAVE_KILL
TRACEPOINT_PROBE(syscalls, sys_enter_kill) {
    s32 pid = args->pid;
    if (args->sig == 0 || pid == (s32)(bpf_get_current_pid_tgid() >> 32)) { return 0; }
    return og_priv_save(OG_T_PRIV_KILL, OG_PRIV_KILL, (u64)(s64)pid, 0, (u64)args->sig, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_kill) { return og_priv_exit_args(args->ret, OG_T_PRIV_KILL); }
#endif
#if OG_PRIV_HAVE_TKILL
TRACEPOINT_PROBE(syscalls, sys_enter_tkill) {
    s32 tid = args->pid;
    if (args->sig == 0 || tid == (s32)(u32)bpf_get_current_pid_tgid()) { return 0; }
    return og_priv_save(OG_T_PRIV_KILL, OG_PRIV_TKILL, (u64)(s64)tid, (u64)(s64)tid,
                        (u64)args->sig, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_tkill) { return og_priv_exit_args(args->ret, OG_T_PRIV_KILL); }
#endif
#if OG_PRIV_HAVE_TGKILL
TRACEPOINT_PROBE(syscalls, sys_enter_tgkill) {
    s32 tgid = args->tgid;
    if (args->sig == 0 || tgid == (s32)(bpf_get_current_pid_tgid() >> 32)) { return 0; }
    return og_priv_save(OG_T_PRIV_KILL, OG_PRIV_TGKILL, (u64)(s64)tgid, (u64)(s64)args->pid,
                        (u64)args->sig, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_tgkill) { return og_priv_exit_args(args->ret, OG_T_PRIV_KILL); }
#endif

#if OG_PRIV_HAVE_UNSHARE
TRACEPOINT_PROBE(syscalls, sys_enter_unshare) {
    return og_priv_save(OG_T_PRIV_UNSHARE, 0, (u64)args->unshare_flags, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_unshare) { return og_priv_exit_args(args->ret, OG_T_PRIV_UNSHARE); }
#endif

#if OG_PRIV_HAVE_SETNS
TRACEPOINT_PROBE(syscalls, sys_enter_setns) {
    return og_priv_save(OG_T_PRIV_SETNS, 0, (u64)(s64)args->fd, (u64)(u32)args->flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_setns) { return og_priv_exit_args(args->ret, OG_T_PRIV_SETNS); }
#endif

#if OG_PRIV_HAVE_MOUNT
TRACEPOINT_PROBE(syscalls, sys_enter_mount) {
    return og_priv_save(OG_T_PRIV_MOUNT, 0, (u64)args->dev_name, (u64)args->dir_name,
                        (u64)args->type, (u64)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_mount) {
    struct og_priv_args a;
    if (!og_priv_take(&a, OG_T_PRIV_MOUNT)) { return 0; }
    struct og_priv_mount_rec *r = og_reserve(sizeof(*r), OG_T_PRIV_MOUNT, args->ret);
    if (!r) { return 0; }
    r->flags = a.a[3];
    r->source[0] = 0;
    r->target[0] = 0;
    r->fstype[0] = 0;
    if (a.a[0]) { bpf_probe_read_user_str(r->source, sizeof(r->source), (const void *)a.a[0]); }
    if (a.a[1]) { bpf_probe_read_user_str(r->target, sizeof(r->target), (const void *)a.a[1]); }
    if (a.a[2]) { bpf_probe_read_user_str(r->fstype, sizeof(r->fstype), (const void *)a.a[2]); }
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif

static __always_inline int og_priv_exit_name(s64 ret, u32 type, u64 str_arg) {
    struct og_priv_args a;
    if (!og_priv_take(&a, type)) { return 0; }
    struct og_priv_name_rec *r = og_reserve(sizeof(*r), a.type, ret);
    if (!r) { return 0; }
    __builtin_memcpy(r->a, a.a, sizeof(r->a));
    r->which = a.which;
    r->_pad = 0;
    r->name[0] = 0;
    u64 p = a.a[str_arg & 3];
    if (p) { bpf_probe_read_user_str(r->name, sizeof(r->name), (const void *)p); }
    og_events.ringbuf_submit(r, 0);
    return 0;
}

// Absent on kernels built without CONFIG_MODULES (module loading then always fails with ENOSYS,
// and the attempt is not observable from tracepoints without paying for raw_syscalls).
#if OG_PRIV_HAVE_INIT_MODULE
TRACEPOINT_PROBE(syscalls, sys_enter_init_module) {
    return og_priv_save(OG_T_PRIV_MODULE, OG_PRIV_INIT_MODULE, (u64)-1, (u64)args->len,
                        (u64)args->uargs, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_init_module) { return og_priv_exit_name(args->ret, OG_T_PRIV_MODULE, 2); }
#endif
#if OG_PRIV_HAVE_FINIT_MODULE
TRACEPOINT_PROBE(syscalls, sys_enter_finit_module) {
    return og_priv_save(OG_T_PRIV_MODULE, OG_PRIV_FINIT_MODULE, (u64)(s64)args->fd, 0,
                        (u64)args->uargs, (u64)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_finit_module) { return og_priv_exit_name(args->ret, OG_T_PRIV_MODULE, 2); }
#endif

#if OG_PRIV_HAVE_BPF
TRACEPOINT_PROBE(syscalls, sys_enter_bpf) {
    return og_priv_save(OG_T_PRIV_BPF, 0, (u64)(u32)args->cmd, (u64)args->size, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_bpf) { return og_priv_exit_args(args->ret, OG_T_PRIV_BPF); }
#endif

#if OG_PRIV_HAVE_MEMFD
TRACEPOINT_PROBE(syscalls, sys_enter_memfd_create) {
    return og_priv_save(OG_T_PRIV_MEMFD, 0, (u64)args->uname, (u64)args->flags, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_memfd_create) { return og_priv_exit_name(args->ret, OG_T_PRIV_MEMFD, 0); }
#endif

// dup2/dup3 onto fd 0-2 only (stdio redirection: the reverse-shell pattern).
#if OG_PRIV_HAVE_DUP2
TRACEPOINT_PROBE(syscalls, sys_enter_dup2) {
    if (args->newfd > 2) { return 0; }
    return og_priv_save(OG_T_PRIV_DUP, OG_PRIV_DUP2, (u64)args->oldfd, (u64)args->newfd, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_dup2) { return og_priv_exit_args(args->ret, OG_T_PRIV_DUP); }
#endif
#if OG_PRIV_HAVE_DUP3
TRACEPOINT_PROBE(syscalls, sys_enter_dup3) {
    if (args->newfd > 2) { return 0; }
    return og_priv_save(OG_T_PRIV_DUP, OG_PRIV_DUP3, (u64)args->oldfd, (u64)args->newfd,
                        (u64)(u32)args->flags, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_dup3) { return og_priv_exit_args(args->ret, OG_T_PRIV_DUP); }
#endif
// dup returns the lowest free fd, known only at exit: the old fd is saved at entry (one map
// update per call) and only a result of 0-2 is sent (fd 0 closed, then dup(sock): stdin).
#if OG_PRIV_HAVE_DUP
TRACEPOINT_PROBE(syscalls, sys_enter_dup) {
    return og_priv_save(OG_T_PRIV_DUP, OG_PRIV_DUP, (u64)args->fildes, 0, 0, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_dup) {
    struct og_priv_args a;
    if (!og_priv_take(&a, OG_T_PRIV_DUP)) { return 0; }
    if (args->ret < 0 || args->ret > 2) { return 0; }
    struct og_priv_args_rec *r = og_reserve(sizeof(*r), OG_T_PRIV_DUP, args->ret);
    if (!r) { return 0; }
    r->a[0] = a.a[0];
    r->a[1] = (u64)args->ret;
    r->a[2] = 0;
    r->a[3] = 0;
    r->which = OG_PRIV_DUP;
    r->_pad = 0;
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif
