// File activity: opens with write intent or under watched prefixes, and the namespace-changing
// calls (unlink, rename, chmod, chown, symlink, link, mkdir, truncate). Entry stashes the
// arguments per thread (paths read from user memory while they are valid); exit adds the return
// value and emits. Placeholders from render(): OG_FILE_PREFIX_MATCH (the unrolled prefix
// compare) and OG_FILE_HANDLERS (one enter/exit pair per available syscall).

#define OG_T_FILE_OPEN     20
#define OG_T_FILE_UNLINK   21
#define OG_T_FILE_RENAME   22
#define OG_T_FILE_CHMOD    23
#define OG_T_FILE_CHOWN    24
#define OG_T_FILE_SYMLINK  25
#define OG_T_FILE_LINK     26
#define OG_T_FILE_MKDIR    27
#define OG_T_FILE_TRUNCATE 28

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
    u32 pad;
    s64 arg;          // truncate length
    char path[OG_PATH_LEN];
    char path2[OG_PATH_LEN];  // rename/link destination, symlink link path
};

struct og_open_how { u64 flags; u64 mode; u64 resolve; };

BPF_PERCPU_ARRAY(og_file_scratch, struct og_file_rec, 1);
BPF_TABLE("lru_hash", u32, struct og_file_rec, og_file_stash, 8192);  // by tid
// Stashes not yet taken, per tid slot (tid & 4095). Most opens are filtered at entry, and an
// array lookup at exit is ~35 ns cheaper than the LRU hash miss (bench/bpf_program_cost.py).
// It may overcount (an exit never seen, an LRU eviction): that slot then just always takes
// the hash lookup. It never undercounts: only a taken stash decrements.
BPF_ARRAY(og_file_pending, u32, 4096);

static __always_inline struct og_file_rec *og_file_begin(u32 sc, u32 type) {
    if (og_is_self()) { return 0; }
    int zero = 0;
    struct og_file_rec *r = og_file_scratch.lookup(&zero);
    if (!r) { return 0; }
    r->dfd = -100;
    r->dfd2 = -100;
    r->sc = sc;
    r->type = type;
    r->flags = 0;
    r->mode = 0;
    r->uid = 0;
    r->gid = 0;
    r->arg = 0;
    r->path[0] = 0;
    r->path2[0] = 0;
    return r;
}

static __always_inline int og_file_prefix_match(const char *p) {
OG_FILE_PREFIX_MATCH
    return 0;
}

// Opens without write intent pass only under a watched prefix; a relative path passes too
// (its directory is known only in user space, which re-checks after resolving).
static __always_inline int og_file_open_wanted(struct og_file_rec *r) {
    if (r->flags & OG_O_WRITE_INTENT) { return 1; }
    return og_file_prefix_match(r->path);
}

static __always_inline int og_file_stash_it(struct og_file_rec *r) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & 4095;
    u32 *pending = og_file_pending.lookup(&slot);
    if (pending) { __sync_fetch_and_add(pending, 1); }
    og_file_stash.update(&tid, r);
    return 0;
}

static __always_inline int og_file_exit(long ret) {
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u32 slot = tid & 4095;
    u32 *pending = og_file_pending.lookup(&slot);
    if (pending && *pending == 0) { return 0; }  // filtered at entry: nothing stashed
    struct og_file_rec *r = og_file_stash.lookup(&tid);
    if (!r) { return 0; }
    og_fill_hdr(&r->h, sizeof(*r), r->type, ret);
    og_output(r, sizeof(*r));
    og_file_stash.delete(&tid);
    if (pending) { __sync_fetch_and_add(pending, -1); }
    return 0;
}

OG_FILE_HANDLERS
