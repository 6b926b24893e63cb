// Evasion probe: io_uring, which performs file and network operations without the syscalls
// the other probes watch. Mirrored by otelguard/ebpf/evasion.py.
//
// render() prepends OG_EV_HAVE_<group> (1 when every tracepoint of the group exists, else 0).
// Execution from memfd, /dev/shm or deleted files is derived by the process table at exec.

#define OG_T_EV_URING_SUBMIT 80
#define OG_T_EV_URING_SETUP 81

struct og_ev_submit_rec {           // URING_SUBMIT: first use of an opcode by a process
    struct og_hdr h;
    u8 opcode;
    u8 sq_thread;                   // submitted by the SQPOLL kernel thread (no syscall)
    u8 _pad[6];
    u64 flags;                      // IOSQE_* of the request
};

struct og_ev_setup_rec {            // URING_SETUP; hdr.ret = ring fd or -errno
    struct og_hdr h;
    u32 entries;
    u32 flags;                      // IORING_SETUP_* read from the caller's io_uring_params
    u32 params_ok;
    u32 _pad;
};

struct og_ev_uring_key {
    struct og_proc_key p;  // the process (common.bpf.h: pids are reused)
    u32 opcode;
    u32 _pad;
};

struct og_ev_setup_args {
    u64 params;
    u32 entries;
    u32 _pad;
};

// A busy ring submits millions of requests: each (process, opcode) is reported once.
BPF_TABLE("lru_hash", struct og_ev_uring_key, u8, og_ev_uring_seen, 8192);
BPF_HASH(og_ev_setup_args_map, u64, struct og_ev_setup_args, 1024);

#if OG_EV_HAVE_SUBMIT
TRACEPOINT_PROBE(io_uring, io_uring_submit_req) {
    if (og_is_self()) { return 0; }
    struct og_ev_uring_key k = {};
    og_proc_key_fill(&k.p);
    k.opcode = args->opcode;
    u8 one = 1;
    if (og_ev_uring_seen.insert(&k, &one) != 0) { return 0; }
    struct og_ev_submit_rec *r = og_reserve(sizeof(*r), OG_T_EV_URING_SUBMIT, 0);
    if (!r) { return 0; }
    r->opcode = args->opcode;
    r->sq_thread = args->sq_thread;
    __builtin_memset(r->_pad, 0, sizeof(r->_pad));
    r->flags = args->flags;
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif

#if OG_EV_HAVE_SETUP
TRACEPOINT_PROBE(syscalls, sys_enter_io_uring_setup) {
    if (og_is_self()) { return 0; }
    struct og_ev_setup_args a = {};
    a.params = (u64)args->params;
    a.entries = (u32)args->entries;
    u64 id = bpf_get_current_pid_tgid();
    if (og_ev_setup_args_map.update(&id, &a)) { og_count_stash_drop(); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_io_uring_setup) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_ev_setup_args *a = og_ev_setup_args_map.lookup(&id);
    if (!a) { return 0; }
    struct og_ev_setup_rec *r = og_reserve(sizeof(*r), OG_T_EV_URING_SETUP, args->ret);
    if (r) {
        r->entries = a->entries;
        // io_uring_params.flags sits at offset 8 (after sq_entries, cq_entries)
        u32 flags = 0;
        r->params_ok = a->params
            && bpf_probe_read_user(&flags, sizeof(flags), (const void *)(a->params + 8)) == 0;
        r->flags = flags;
        r->_pad = 0;
        og_events.ringbuf_submit(r, 0);
    }
    og_ev_setup_args_map.delete(&id);
    return 0;
}
#endif
