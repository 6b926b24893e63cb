// File activity: opens with write intent or of a watched read path, and the namespace-changing
// calls (unlink, rename, chmod, chown, symlink, link, mkdir, truncate). Entry stashes the
// arguments per thread (paths read from user memory while they are valid); exit adds the return
// value and emits. Placeholders from render(): OG_FILE_DEFINES (read filter on/off, dedup
// window and size), OG_FILE_READ_MATCH (the read paths and prefixes, compiled to a byte trie)
// and OG_FILE_HANDLERS (one enter/exit pair per available syscall).

#define OG_T_FILE_OPEN     20
#define OG_T_FILE_UNLINK   21
#define OG_T_FILE_RENAME   22
#define OG_T_FILE_CHMOD    23
#define OG_T_FILE_CHOWN    24
#define OG_T_FILE_SYMLINK  25
#define OG_T_FILE_LINK     26
#define OG_T_FILE_MKDIR    27
#define OG_T_FILE_TRUNCATE 28

OG_FILE_DEFINES

// x86-64 open(2) flag bits (uapi asm-generic/fcntl.h)
#define OG_O_WRITE_INTENT (01 | 02 | 0100 | 01000 | 02000)  // WRONLY RDWR CREAT TRUNC APPEND

// Mirrored by otelguard.ebpf.file.FileRecord.
struct og_file_rec {
    struct og_hdr h;
    s32 dfd;          // dirfd of path (AT_FDCWD = -100), or the fd for fchmod/fchown/ftruncate
    s32 dfd2;         // dirfd of path2
    u32 sc;           // index into file.py SYSCALLS
    u32 type;         // OG_T_FILE_*
    u64 flags;        // open flags, AT_* flags, RENAME_* flags
    u32 mode;
    u32 uid;          // chown target
    u32 gid;
    u32 repeat;       // identical opens counted in the kernel since the last one sent (dedup)
    s64 arg;          // truncate length
    char path[OG_PATH_LEN];
    char path2[OG_PATH_LEN];  // rename/link destination, symlink link path
};

struct og_open_how { u64 flags; u64 mode; u64 resolve; };

// What entry stashes: the record, and the user pointers of the paths it could not read.
// A tracepoint cannot fault, so a path in a page that is not resident (a mapping no one
// touched yet, a fresh binary's .rodata, a page being reclaimed or migrated) reads as an
// error at entry; the syscall itself faults it in, so exit reads it again
// (docs/architecture.md#kernel-facts). Without it such an open was sent with an empty path:
// a way to hide a write from every path rule.
struct og_file_stashed {
    struct og_file_rec rec;  // first: a record pointer is the stashed one
    u64 late_path;           // user pointer of `path` when entry could not read it, else 0
    u64 late_path2;
};
#define og_file_late(r) ((struct og_file_stashed *)(r))
BPF_PERCPU_ARRAY(og_file_scratch, struct og_file_stashed, 1);
BPF_TABLE("lru_hash", u32, struct og_file_stashed, og_file_stash, 8192);  // by tid
// Stashes not yet taken, per tid slot (tid & 4095). Most opens are filtered at entry, and an
// array lookup at exit is ~35 ns cheaper than the LRU hash miss (bench/bpf_program_cost.py).
// It may overcount (an exit never seen, an LRU eviction): that slot then just always takes
// the hash lookup. It never undercounts: only a taken stash decrements.
BPF_ARRAY(og_file_pending, u32, 4096);

static __always_inline struct og_file_rec *og_file_begin(u32 sc, u32 type) {
    if (og_is_self()) { return 0; }
    int zero = 0;
    struct og_file_stashed *s = og_file_scratch.lookup(&zero);
    if (!s) { return 0; }
    s->late_path = 0;
    s->late_path2 = 0;
    struct og_file_rec *r = &s->rec;
    r->dfd = -100;
    r->dfd2 = -100;
    r->sc = sc;
    r->type = type;
    r->flags = 0;
    r->mode = 0;
    r->uid = 0;
    r->gid = 0;
    r->repeat = 0;
    r->arg = 0;
    r->path[0] = 0;
    r->path2[0] = 0;
    return r;
}

// The cheap fact first: an open without write intent is worth reading the path of only when
// some read path or prefix is watched (a rule set that judges only writes reads no path here).
static __always_inline int og_file_flags_wanted(u64 flags) {
    return (flags & OG_O_WRITE_INTENT) || OG_FILE_READS;
}

#if OG_FILE_READS
// 1 when `p` is one of the read paths or starts with one of the read prefixes (rendered as a
// byte trie: an unwatched path leaves at its first byte that no entry has).
static __always_inline int og_file_read_match(const char *p) {
OG_FILE_READ_MATCH
}

// Each byte of the result is 0x80 where the byte of `v` is 0, else 0 (exact: no carries).
static __always_inline u64 og_zero_bytes(u64 v) {
    u64 t = (v & 0x7f7f7f7f7f7f7f7fULL) + 0x7f7f7f7f7f7f7f7fULL;
    return ~(t | v | 0x7f7f7f7f7f7f7f7fULL);
}
#define OG_BYTES(c) (0x0101010101010101ULL * (u8)(c))

// Bytes base..base+7 of `p` (a string of `len` bytes with its NUL): a "//", "/./", "/../",
// or a trailing "/." or "/.." at one of them.
static __always_inline int og_file_odd_at(const char *p, int base, int len) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        int i = base + k;
        if (i >= len - 1) { return 0; }
        if (p[i] != '/') { continue; }
        char n = p[i + 1];
        if (n == '/') { return 1; }
        if (n != '.') { continue; }
        char m = p[i + 2];
        if (m == '/' || m == 0) { return 1; }
        if (m == '.' && (p[i + 3] == '/' || p[i + 3] == 0)) { return 1; }
    }
    return 0;
}

#define OG_SCAN_WORDS 30
// 1 when the absolute path `p` (`len` bytes read, NUL included) may name another file once
// normalised ("//", "/./", "/../", a trailing "/." or "/.."), or is too long to scan: user
// space resolves it and re-checks, so /etc//shadow or /tmp/../etc/shadow cannot slip past an
// exact name. Hidden files ("/.ssh") are not taken for it. Eight bytes at a time: a word with
// no '/' followed by '/' or '.' is passed over with a few ALU operations.
static __always_inline int og_file_not_normal(const char *p, int len) {
    if (len <= 0 || len > 8 * OG_SCAN_WORDS) { return 1; }
    const u64 *w = (const u64 *)p;
    for (int i = 0; i < OG_SCAN_WORDS; i++) {
        if (i * 8 >= len) { return 0; }
        u64 x = w[i];
        u64 n = (x >> 8) | (w[i + 1] << 56);  // n's byte k is p[8i + k + 1]
        u64 cand = og_zero_bytes(x ^ OG_BYTES('/')) &
                   (og_zero_bytes(n ^ OG_BYTES('/')) | og_zero_bytes(n ^ OG_BYTES('.')));
        if (cand && og_file_odd_at(p, i * 8, len)) { return 1; }
    }
    return 0;
}
#endif

// Opens without write intent pass only for a watched path; a relative path passes too (its
// directory is known only in user space, which re-checks after resolving), and so does one
// that is not normalised.
// `len`: what bpf_probe_read_user_str returned for the path.
static __always_inline int og_file_open_wanted(struct og_file_rec *r, long len) {
    if (r->flags & OG_O_WRITE_INTENT) { return 1; }
#if OG_FILE_READS
    const char *p = r->path;
    if (og_file_read_match(p)) { return 1; }
    if (p[0] != '/') { return 1; }
    return og_file_not_normal(p, (int)len);
#else
    return 0;
#endif
}

static __always_inline int og_file_stash_it(struct og_file_rec *r) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & 4095;
    u32 *pending = og_file_pending.lookup(&slot);
    if (pending) { __sync_fetch_and_add(pending, 1); }
    if (og_file_stash.update(&tid, og_file_late(r))) { og_count_stash_drop(); }
    return 0;
}

#if OG_FILE_DEDUP_NS > 0
// Per-process deduplication of opens (docs/architecture.md#kernel-facts): an open identical to
// one this process sent less than OG_FILE_DEDUP_NS ago (same syscall, dirfd, path, flags, mode,
// result, uid/gid, comm, cgroup, and no exec since) is counted in its entry instead of sent;
// the next identical one after the window is sent carrying the count (`repeat`), and user
// space flushes counts whose window passed with no further repeat (file.py). The first one is
// always sent. Keyed by (tgid, hash); the entry keeps the whole record, compared byte by byte,
// so a hash collision can only cost a send, never hide a record.
struct og_file_dkey { u32 tgid; u32 pad; u64 hash; };
struct og_file_seen {
    u64 sent_ns;      // when the last identical record was sent
    u64 last_ns;      // the last repeat counted
    u64 count;        // repeats counted since sent_ns
    struct og_file_rec rec;
};
BPF_TABLE("lru_hash", struct og_file_dkey, struct og_file_seen, og_file_dedup,
          OG_FILE_DEDUP_ENTRIES);
// Per tgid: 1 = entries exist and no exec since; else the ktime of its last exec (entries sent
// before it are stale: a new program runs). An evicted entry means "unknown": the open is sent.
BPF_TABLE("lru_hash", u32, u64, og_file_exec, OG_FILE_DEDUP_ENTRIES);
BPF_PERCPU_ARRAY(og_file_seen_scratch, struct og_file_seen, 1);
// [0] repeats counted in the kernel; [1] counts overwritten before they were reported (the
// entry was replaced after an exec or a hash collision)
BPF_PERCPU_ARRAY(og_file_repeats, u64, 2);

TRACEPOINT_PROBE(sched, sched_process_exec) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u64 *seen = og_file_exec.lookup(&tgid);
    if (seen) { *seen = bpf_ktime_get_ns(); }
    return 0;
}

static __always_inline void og_file_repeats_add(int index, u64 n) {
    u64 *v = og_file_repeats.lookup(&index);
    if (v) { *v += n; }
}

static __always_inline u64 og_file_hash(struct og_file_rec *r) {
    u64 h = 14695981039346656037ULL ^ r->flags ^ ((u64)r->sc << 40) ^ ((u64)(u32)r->dfd << 8);
    h = (h ^ (u64)r->h.ret) * 1099511628211ULL;
    for (int i = 0; i < OG_PATH_LEN; i++) {
        char c = r->path[i];
        if (c == 0) { break; }
        h = (h ^ (u8)c) * 1099511628211ULL;
    }
    return h;
}

static __always_inline int og_file_same(struct og_file_rec *a, struct og_file_rec *b) {
    if (a->sc != b->sc || a->dfd != b->dfd || a->flags != b->flags || a->mode != b->mode ||
        a->h.ret != b->h.ret || a->h.uid != b->h.uid || a->h.gid != b->h.gid ||
        a->h.cgroup_id != b->h.cgroup_id) { return 0; }
    u64 *ca = (u64 *)a->h.comm, *cb = (u64 *)b->h.comm;
    if (ca[0] != cb[0] || ca[1] != cb[1]) { return 0; }
    for (int i = 0; i < OG_PATH_LEN; i++) {
        char c = a->path[i];
        if (c != b->path[i]) { return 0; }
        if (c == 0) { return 1; }
    }
    return 1;
}

// 1: `r` repeats a record sent within the window (counted, not sent); 0: send it (with the
// count of repeats since the last one sent in `repeat`).
static __always_inline int og_file_repeat(struct og_file_rec *r) {
    u32 tgid = r->h.pid;
    u64 now = r->h.ktime_ns;
    struct og_file_dkey key = {};
    key.tgid = tgid;
    key.hash = og_file_hash(r);
    u64 *exec = og_file_exec.lookup(&tgid);
    struct og_file_seen *d = og_file_dedup.lookup(&key);
    // sent before this process's exec (a new program) or before the fork that made this tgid
    // (a reused pid: og_gen) is another process's entry
    if (d && exec && *exec < d->sent_ns && og_gen(tgid) < d->sent_ns &&
        og_file_same(&d->rec, r)) {
        if (now - d->sent_ns < OG_FILE_DEDUP_NS) {
            __sync_fetch_and_add(&d->count, 1);
            d->last_ns = now;
            og_file_repeats_add(0, 1);
            return 1;
        }
        u64 n = d->count;
        r->repeat = n > 0xffffffffULL ? 0xffffffff : (u32)n;
        __sync_fetch_and_add(&d->count, -n);
        d->sent_ns = now;
        d->last_ns = now;
        return 0;
    }
    if (d && d->count) { og_file_repeats_add(1, d->count); }
    if (!exec) {
        u64 one = 1;
        og_file_exec.update(&tgid, &one);
    }
    int zero = 0;
    struct og_file_seen *s = og_file_seen_scratch.lookup(&zero);
    if (!s) { return 0; }
    s->sent_ns = now;
    s->last_ns = now;
    s->count = 0;
    __builtin_memcpy(&s->rec, r, sizeof(s->rec));
    og_file_dedup.update(&key, s);
    return 0;
}
#endif

static __always_inline int og_file_exit(long ret) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & 4095;
    u32 *pending = og_file_pending.lookup(&slot);
    if (pending && *pending == 0) { return 0; }  // filtered at entry: nothing stashed
    struct og_file_stashed *s = og_file_stash.lookup(&tid);
    if (!s) { return 0; }
    struct og_file_rec *r = &s->rec;
    if (s->late_path) {  // unread at entry: the syscall has faulted the page in by now
        bpf_probe_read_user_str(r->path, sizeof(r->path), (void *)s->late_path);
    }
    if (s->late_path2) {
        bpf_probe_read_user_str(r->path2, sizeof(r->path2), (void *)s->late_path2);
    }
    og_fill_hdr(&r->h, sizeof(*r), r->type, ret);
#if OG_FILE_DEDUP_NS > 0
    if (r->type != OG_T_FILE_OPEN || !og_file_repeat(r)) { og_output(r, sizeof(*r)); }
#else
    og_output(r, sizeof(*r));
#endif
    og_file_stash.delete(&tid);
    if (pending) { __sync_fetch_and_add(pending, -1); }
    return 0;
}

OG_FILE_HANDLERS
