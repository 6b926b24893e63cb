// Process lifecycle: exec (with argv from user memory), fork (processes, not threads), exit (with
// exit_group's code), chdir/fchdir (cwd tracking for relative paths).
// Placeholders: OG_ARGV_MAX, OG_ARG_LEN, OG_ENV_MAX (0: no environment scan), OG_ENV_LEN,
// OG_ENV_SCAN, OG_ENV_HEAD, og_env_wanted() (the allowlist compare), and OG_TP_<tracepoint>
// (1 when present) from render().
// sched_process_exec is not used: its filename lives in kernel memory
// (docs/architecture.md#kernel-facts).

#define OG_T_EXEC  1
#define OG_T_FORK  2
#define OG_T_EXIT  3
#define OG_T_CHDIR 4

#define OG_SC_EXECVE   0
#define OG_SC_EXECVEAT 1
#define OG_SC_CHDIR    2
#define OG_SC_FCHDIR   3

#define OG_CLONE_THREAD 0x00010000ULL

// Mirrored by otelguard.ebpf.process.ExecRecord; args follow as OG_ARGV_MAX slots of OG_ARG_LEN,
// then the allowlisted environment variables as OG_ENV_MAX slots of OG_ENV_LEN ("NAME=VALUE").
struct og_exec_rec {
    struct og_hdr h;
    s32 dirfd;        // execveat fd (AT_FDCWD = -100 for execve)
    u32 flags;        // execveat flags
    u16 sc;           // OG_SC_EXECVE / OG_SC_EXECVEAT
    u16 argc;         // arguments read (<= OG_ARGV_MAX)
    u16 argv_max;     // OG_ARGV_MAX (slot count, so user space needs no config)
    u16 arg_len;      // OG_ARG_LEN (slot size)
    u32 truncated;    // bit 0: argv had more than OG_ARGV_MAX entries; bit 1: a pointer or
                      // string of argv was in a page not resident (user space reads /proc)
    u16 envc;         // allowlisted variables read (<= OG_ENV_MAX)
    u16 env_max;      // OG_ENV_MAX
    u16 env_len;      // OG_ENV_LEN
    u16 env_more;     // 1: more allowlisted variables than slots; 2: envp longer than OG_ENV_SCAN
    u32 pad;
    char filename[OG_PATH_LEN];
    char args[OG_ARGV_MAX][OG_ARG_LEN];
#if OG_ENV_MAX
    char env[OG_ENV_MAX][OG_ENV_LEN];
#endif
};

struct og_fork_rec {
    struct og_hdr h;
    u32 parent_pid;
    u32 child_pid;
};

struct og_exit_rec {
    struct og_hdr h;
    s32 code;         // exit_group(code) or -1 when not seen (killed by a signal, thread exit)
    u32 has_code;
};

struct og_chdir_rec {
    struct og_hdr h;
    s32 fd;           // fchdir fd, -1 for chdir
    u32 sc;
    char path[OG_PATH_LEN];
};

BPF_PERCPU_ARRAY(og_exec_scratch, struct og_exec_rec, 1);
BPF_TABLE("lru_hash", u32, struct og_exec_rec, og_exec_stash, 4096);     // by tgid (see exit)
BPF_TABLE("lru_hash", u32, u64, og_clone_flags, 8192);                  // by tid
BPF_TABLE("lru_hash", u32, s32, og_exit_codes, 8192);                   // by tgid
BPF_TABLE("lru_hash", u32, struct og_chdir_rec, og_chdir_stash, 1024);  // by tid

#if OG_ENV_MAX
// The environment the new image gets, from the caller's envp (user memory, valid at entry):
// only variables whose NAME is allowlisted are copied (og_env_wanted compares the first
// OG_ENV_HEAD bytes); values of other variables are never read past that head. One loop over
// the entries, with a variable index and no unrolled body, so the verifier walks one body per
// entry and prunes the paths inside it (docs/architecture.md#kernel-facts): the count of
// variables copied lives in the record (r->envc), not in a register, so it does not split the
// verifier's states. The pointer array is read 8 entries at a time (one helper call instead of
// eight); a block that cannot be read whole (the array ends before an unmapped page) is read
// entry by entry.
static __always_inline void og_exec_env(struct og_exec_rec *r, const char *const *envp) {
    const char *ptrs[8] = {};
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < OG_ENV_SCAN; i++) {
        u32 j = i & 7;
        if (j == 0) {  // a failed read zeroes ptrs: each entry is then read alone below
            bpf_probe_read_user(ptrs, sizeof(ptrs), &envp[i]);
        }
        const char *p = ptrs[j];
        if (!p && bpf_probe_read_user(&p, sizeof(p), &envp[i]) != 0) { return; }
        if (!p) { return; }
        u64 head[OG_ENV_HEAD / 8];  // words: og_env_wanted compares 8 bytes at a time
        __builtin_memset(head, 0, sizeof(head));
        if (bpf_probe_read_user_str(head, sizeof(head), p) <= 0 || !og_env_wanted(head)) {
            continue;
        }
        u32 k = r->envc;
        if (k >= OG_ENV_MAX) {
            r->env_more |= 1;
            continue;
        }
        r->env[k][0] = 0;
        bpf_probe_read_user_str(r->env[k], OG_ENV_LEN, p);
        r->envc = k + 1;
    }
    const char *p = 0;
    if (bpf_probe_read_user(&p, sizeof(p), &envp[OG_ENV_SCAN]) == 0 && p) { r->env_more |= 2; }
}
#endif

static __always_inline int og_exec_enter(s32 dirfd, const char *filename,
                                         const char *const *argv, const char *const *envp,
                                         u32 flags, u16 sc) {
    if (og_is_self()) { return 0; }
    int zero = 0;
    struct og_exec_rec *r = og_exec_scratch.lookup(&zero);
    if (!r) { return 0; }
    r->dirfd = dirfd;
    r->flags = flags;
    r->sc = sc;
    r->argc = 0;
    r->argv_max = OG_ARGV_MAX;
    r->arg_len = OG_ARG_LEN;
    r->truncated = 0;
    r->envc = 0;
    r->env_max = OG_ENV_MAX;
    r->env_len = OG_ENV_LEN;
    r->env_more = 0;
    r->filename[0] = 0;
    bpf_probe_read_user_str(r->filename, sizeof(r->filename), filename);
#pragma unroll
    for (int i = 0; i < OG_ARGV_MAX; i++) {
        const char *p = 0;
        // a tracepoint cannot fault, and exit is too late (the old image is gone): a page not
        // resident is flagged for user space (docs/architecture.md#kernel-facts)
        if (bpf_probe_read_user(&p, sizeof(p), &argv[i]) != 0) { r->truncated |= 2; goto done; }
        if (!p) { goto done; }
        r->args[i][0] = 0;
        if (bpf_probe_read_user_str(r->args[i], OG_ARG_LEN, p) < 0) { r->truncated |= 2; }
        r->argc = i + 1;
    }
    {
        const char *p = 0;
        if (bpf_probe_read_user(&p, sizeof(p), &argv[OG_ARGV_MAX]) == 0 && p) { r->truncated |= 1; }
    }
done:;
#if OG_ENV_MAX
    if (envp) { og_exec_env(r, envp); }
#endif
    // keyed by tgid: a successful exec from a non-leader thread returns in the leader's tid
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    if (og_exec_stash.update(&tgid, r)) { og_count_stash_drop(); }
    return 0;
}

static __always_inline int og_exec_exit(long ret) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    struct og_exec_rec *r = og_exec_stash.lookup(&tgid);
    if (!r) { return 0; }
    og_fill_hdr(&r->h, sizeof(*r), OG_T_EXEC, ret);
    og_output(r, sizeof(*r));
    og_exec_stash.delete(&tgid);
    return 0;
}

#if OG_TP_sys_enter_execve
TRACEPOINT_PROBE(syscalls, sys_enter_execve) {
    return og_exec_enter(-100, args->filename, args->argv, args->envp, 0, OG_SC_EXECVE);
}
#endif
#if OG_TP_sys_exit_execve
TRACEPOINT_PROBE(syscalls, sys_exit_execve) { return og_exec_exit(args->ret); }
#endif
#if OG_TP_sys_enter_execveat
TRACEPOINT_PROBE(syscalls, sys_enter_execveat) {
    return og_exec_enter((s32)args->fd, args->filename, args->argv, args->envp,
                         (u32)args->flags, OG_SC_EXECVEAT);
}
#endif
#if OG_TP_sys_exit_execveat
TRACEPOINT_PROBE(syscalls, sys_exit_execveat) { return og_exec_exit(args->ret); }
#endif

// Threads vs processes: sched_process_fork fires for both; clone(CLONE_THREAD) is remembered per
// tid at syscall entry and consumed by the fork tracepoint (which runs in the parent).
#if OG_TP_sys_enter_clone
TRACEPOINT_PROBE(syscalls, sys_enter_clone) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = args->clone_flags;
    og_clone_flags.update(&tid, &flags);
    return 0;
}
#endif
#if OG_TP_sys_enter_clone3
TRACEPOINT_PROBE(syscalls, sys_enter_clone3) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 flags = 0;
    bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);  // clone_args.flags is first
    og_clone_flags.update(&tid, &flags);
    return 0;
}
#endif
#if OG_TP_sched_process_fork
TRACEPOINT_PROBE(sched, sched_process_fork) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *flags = og_clone_flags.lookup(&tid);
    if (flags) {
        u64 f = *flags;
        og_clone_flags.delete(&tid);
        if (f & OG_CLONE_THREAD) { return 0; }
    }
    u32 child = args->child_pid;
    u64 gen = bpf_ktime_get_ns();
    og_proc_gen.update(&child, &gen);  // every new process: see og_gen (common.bpf.h)
    if (og_is_self()) { return 0; }
    struct og_fork_rec *r = og_reserve(sizeof(*r), OG_T_FORK, 0);
    if (!r) { return 0; }
    r->parent_pid = bpf_get_current_pid_tgid() >> 32;
    r->child_pid = args->child_pid;
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif

#if OG_TP_sys_enter_exit_group
TRACEPOINT_PROBE(syscalls, sys_enter_exit_group) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    s32 code = (s32)args->error_code;
    og_exit_codes.update(&tgid, &code);
    return 0;
}
#endif
#if OG_TP_sched_process_exit
TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 pt = bpf_get_current_pid_tgid();
    u32 tgid = pt >> 32;
    if ((u32)pt != tgid || og_is_self()) { return 0; }  // the thread-group leader only
    struct og_exit_rec *r = og_reserve(sizeof(*r), OG_T_EXIT, 0);
    if (!r) { og_exit_codes.delete(&tgid); return 0; }
    s32 *code = og_exit_codes.lookup(&tgid);
    r->code = code ? *code : -1;
    r->has_code = code ? 1 : 0;
    og_events.ringbuf_submit(r, 0);
    og_exit_codes.delete(&tgid);
    return 0;
}
#endif

static __always_inline int og_chdir_enter(s32 fd, const char *path, u32 sc) {
    if (og_is_self()) { return 0; }
    u32 tid = (u32)bpf_get_current_pid_tgid();
    int zero = 0;
    struct og_exec_rec *scratch = og_exec_scratch.lookup(&zero);  // reuse: larger than chdir rec
    if (!scratch) { return 0; }
    struct og_chdir_rec *r = (struct og_chdir_rec *)scratch;
    r->fd = fd;
    r->sc = sc;
    r->path[0] = 0;
    if (path) { bpf_probe_read_user_str(r->path, sizeof(r->path), path); }
    if (og_chdir_stash.update(&tid, r)) { og_count_stash_drop(); }
    return 0;
}

static __always_inline int og_chdir_exit(long ret) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct og_chdir_rec *r = og_chdir_stash.lookup(&tid);
    if (!r) { return 0; }
    og_fill_hdr(&r->h, sizeof(*r), OG_T_CHDIR, ret);
    og_output(r, sizeof(*r));
    og_chdir_stash.delete(&tid);
    return 0;
}

#if OG_TP_sys_enter_chdir
TRACEPOINT_PROBE(syscalls, sys_enter_chdir) { return og_chdir_enter(-1, args->filename, OG_SC_CHDIR); }
#endif
#if OG_TP_sys_exit_chdir
TRACEPOINT_PROBE(syscalls, sys_exit_chdir) { return og_chdir_exit(args->ret); }
#endif
#if OG_TP_sys_enter_fchdir
TRACEPOINT_PROBE(syscalls, sys_enter_fchdir) { return og_chdir_enter((s32)args->fd, 0, OG_SC_FCHDIR); }
#endif
#if OG_TP_sys_exit_fchdir
TRACEPOINT_PROBE(syscalls, sys_exit_fchdir) { return og_chdir_exit(args->ret); }
#endif
