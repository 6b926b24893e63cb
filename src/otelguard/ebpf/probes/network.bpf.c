// Network probe: socket/connect/accept/bind/listen, DNS queries read from user buffers, and TCP
// state changes (ESTABLISHED, CLOSE) for connection spans. Mirrored by otelguard/ebpf/network.py.
//
// render() prepends:
//   OG_NET_HAVE_<group>   1 when every tracepoint of the handler group exists, else 0
//   OG_NET_IS_DNS_PORT(p) true for the configured DNS ports (host byte order)
// Everything here reads tracepoint fields and user memory only (lockdown=confidentiality).

#define OG_T_NET_SOCKET 40
#define OG_T_NET_CONNECT 41
#define OG_T_NET_ACCEPT 42
#define OG_T_NET_BIND 43
#define OG_T_NET_LISTEN 44
#define OG_T_NET_DNS 45
#define OG_T_NET_STATE 46

#ifndef OG_NET_IS_DNS_PORT
#define OG_NET_IS_DNS_PORT(p) ((p) == 53)
#endif

#define OG_NET_SA_LEN 28        // sizeof(struct sockaddr_in6)
#define OG_NET_DNS_CAP 512      // payload bytes copied per query (classic UDP DNS maximum)
#define OG_NET_MMSG_MAX 4       // sendmmsg messages inspected per call (glibc sends A+AAAA as 2)
#define OG_NET_AF_UNIX 1
#define OG_NET_AF_INET 2
#define OG_NET_AF_INET6 10
#define OG_NET_AF_NETLINK 16
#define OG_NET_AF_PACKET 17
#define OG_NET_SOCK_RAW 3
#define OG_NET_EAGAIN 11
#define OG_NET_EINPROGRESS 115
#define OG_NET_TCP_ESTABLISHED 1
#define OG_NET_TCP_CLOSE 7
#define OG_NET_TCP_LISTEN 10
#define OG_NET_IPPROTO_TCP 6

// og_net_args.nr: the exit handler only takes arguments its own entry saved (an exit that
// never fired, e.g. a thread killed mid-syscall, must not leak into another syscall's record)
#define OG_NET_NR_SOCKET 1
#define OG_NET_NR_CONNECT 2
#define OG_NET_NR_ACCEPT 3
#define OG_NET_NR_BIND 4
#define OG_NET_NR_LISTEN 5
#define OG_NET_NR_SEND 6

// how the DNS payload left the process (og_net_dns_rec.via)
#define OG_NET_VIA_SENDTO 0
#define OG_NET_VIA_SENDMSG 1
#define OG_NET_VIA_SENDMMSG 2
#define OG_NET_VIA_WRITE 3

struct og_net_socket_rec {          // OG_T_NET_SOCKET; ret = new fd or -errno
    struct og_hdr h;
    s32 family;
    s32 type;
    s32 protocol;
    u32 _pad;
};

struct og_net_addr_rec {            // CONNECT, ACCEPT, BIND, LISTEN
    struct og_hdr h;
    s32 fd;                         // the socket operated on (accept: the listening socket)
    u32 aux;                        // listen: backlog; accept: flags
    u32 sa_len;                     // bytes of sa that came from user memory
    u8 sa[OG_NET_SA_LEN];           // raw struct sockaddr (connect/bind: target; accept: peer)
};

struct og_net_dns_rec {             // OG_T_NET_DNS; ret = the send call's return value
    struct og_hdr h;
    s32 fd;
    u32 len;                        // payload length the process passed
    u16 caplen;                     // bytes copied into payload
    u8 via;                         // OG_NET_VIA_*
    u8 msg_index;                   // sendmmsg: index of the message
    u8 sa[OG_NET_SA_LEN];           // explicit destination (sendto/sendmsg name), else zeros
    u8 payload[OG_NET_DNS_CAP];
};

struct og_net_state_rec {           // OG_T_NET_STATE (may run in softirq: pid is not the owner)
    struct og_hdr h;
    u64 skaddr;                     // opaque socket identity, stable for the connection
    s32 oldstate;
    s32 newstate;
    u16 sport;
    u16 dport;
    u16 family;
    u16 protocol;
    u8 saddr[16];
    u8 daddr[16];
    u32 owner_tgid;                 // the connect()ing process, 0 when not seen (passive side)
    s32 owner_fd;                   // its socket fd, -1 when not known
};

// Arguments saved at syscall entry for the exit handler (one syscall at a time per thread).
struct og_net_args {
    s32 fd;
    u32 aux;
    u32 sa_len;
    s32 family;
    s32 type;
    s32 protocol;
    u64 uptr;                       // accept: peer sockaddr pointer; send*: payload / mmsg pointer
    u64 ulen;                       // accept: socklen_t pointer; send*: payload length / vlen
    u8 sa[OG_NET_SA_LEN];
    u8 via;
    u8 connected;                   // send*: the socket was connect()ed to a DNS port
    u8 nr;                          // OG_NET_NR_*: which syscall saved these arguments
    u8 _pad2[5];
    u64 late_sa;                    // the address's user pointer when entry could not read it
    u64 late_len;
    u64 late_msg;                   // sendmsg: the msghdr's user pointer, read again at exit
};

struct og_net_fdkey {
    u32 tgid;
    s32 fd;
};

struct og_net_iovec {
    u64 base;
    u64 len;
};

struct og_net_umsghdr {             // struct user_msghdr (x86_64/arm64 layout)
    u64 name;
    s32 namelen;
    s32 _pad;
    u64 iov;
    u64 iovlen;
    u64 control;
    u64 controllen;
    u32 flags;
    u32 _pad2;
};

struct og_net_mmsghdr {             // struct mmsghdr
    struct og_net_umsghdr hdr;
    u32 len;
    u32 _pad;
};

BPF_HASH(og_net_args_map, u64, struct og_net_args, 10240);
// Sockets connect()ed to a DNS port: (tgid, fd). socket()/accept() returning the fd and a
// connect elsewhere clear the entry, so a reused fd stops being treated as DNS.
// The value is the connected destination, so queries on the socket carry their peer from the
// kernel (a /proc lookup at decode time fails once a short-lived resolver has exited).
struct og_net_dns_dest { u8 sa[OG_NET_SA_LEN]; };
BPF_TABLE("lru_hash", struct og_net_fdkey, struct og_net_dns_dest, og_net_dns_socks, 4096);
// Owners of TCP sockets, learnt where the kernel runs in the owner's own context: the
// CLOSE -> SYN_SENT change happens inside connect(). Later changes of the same socket run in
// softirq (whoever is current there is not the owner), so ESTABLISHED/CLOSE records carry the
// owner from here, and sockets of tasks the sensor does not watch (out of scope, or ourselves)
// never reach the ring buffer: a busy host's connection churn cannot crowd out watched records.
struct og_net_conn {
    u32 tgid;
    s32 fd;
    u8 skip;                        // the owner is not watched: no record for this socket
    u8 passive;                     // accepted (owner learnt in user space, from accept)
};
BPF_TABLE("lru_hash", u64, struct og_net_conn, og_net_conns, 65536);
// Listening ports and whether a watched task listens there (CLOSE -> LISTEN runs in listen()).
// A connection accepted on a port where only unwatched tasks listen is not sent. Keyed by port
// alone (tracepoints name no network namespace): one watched listener on a port in any
// namespace keeps that port's connections, so the filter can only keep too much.
struct og_net_listen_count { u32 watched; u32 unwatched; };
struct og_net_listener { u16 port; u8 watched; };
BPF_HASH(og_net_listen_ports, u16, struct og_net_listen_count, 4096);
BPF_TABLE("lru_hash", u64, struct og_net_listener, og_net_listeners, 8192);
// Ports whose listener predates the agent (no LISTEN change seen): learnt from who closes an
// accepted connection there (close()/shutdown() run in the owner's context), 1 = watched.
BPF_TABLE("lru_hash", u16, u8, og_net_port_learnt, 4096);
// Scratch for assembling an og_net_args (too big for the 512-byte stack beside the records).
BPF_PERCPU_ARRAY(og_net_scratch, struct og_net_args, 1);

static __always_inline u16 og_net_bswap16(u16 v) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    return __builtin_bswap16(v);
#else
    return v;
#endif
}

// Copy a user sockaddr; returns the bytes copied, 0 on failure. Constant sizes (the two inet
// layouts, or just the family) keep the verifier happy and never read past the caller's buffer.
static __always_inline u32 og_net_read_sa(u8 *dst, u64 uaddr, u64 addrlen) {
    if (!uaddr || addrlen < 2) { return 0; }
    if (addrlen >= OG_NET_SA_LEN) {
        return bpf_probe_read_user(dst, OG_NET_SA_LEN, (const void *)uaddr) ? 0 : OG_NET_SA_LEN;
    }
    if (addrlen >= 16) {
        return bpf_probe_read_user(dst, 16, (const void *)uaddr) ? 0 : 16;
    }
    return bpf_probe_read_user(dst, 2, (const void *)uaddr) ? 0 : 2;
}

// The address argument at entry, into `a`. A page that is not resident cannot be read by a
// tracepoint (it cannot fault); the syscall faults it in, so the pointer is kept in
// `late_sa` and exit reads it again (og_net_sa_late). Without this, a sockaddr in such a page
// made a connect invisible (docs/architecture.md#kernel-facts).
static __always_inline void og_net_sa_enter(struct og_net_args *a, u64 uaddr, u64 addrlen) {
    a->sa_len = og_net_read_sa(a->sa, uaddr, addrlen);
    if (a->sa_len || !uaddr || addrlen < 2) { return; }
    a->late_sa = uaddr;
    a->late_len = addrlen;
}

// At exit: the address entry could not read, read again now.
static __always_inline void og_net_sa_late(struct og_net_args *a) {
    if (a->late_sa) { a->sa_len = og_net_read_sa(a->sa, a->late_sa, a->late_len); }
}

static __always_inline u16 og_net_sa_family(const u8 *sa) {
    return (u16)sa[0] | ((u16)sa[1] << 8);
}

static __always_inline u16 og_net_sa_port(const u8 *sa) {
    return ((u16)sa[2] << 8) | (u16)sa[3];       // network byte order on the wire
}

static __always_inline int og_net_sa_is_inet(const u8 *sa) {
    u16 f = og_net_sa_family(sa);
    return f == OG_NET_AF_INET || f == OG_NET_AF_INET6;
}

static __always_inline int og_net_sa_is_dns(const u8 *sa) {
    return og_net_sa_is_inet(sa) && OG_NET_IS_DNS_PORT(og_net_sa_port(sa));
}

// This thread's saved arguments if `nr` saved them; a foreign entry is discarded.
static __always_inline struct og_net_args *og_net_take(u64 id, u8 nr) {
    struct og_net_args *a = og_net_args_map.lookup(&id);
    if (!a) { return 0; }
    if (a->nr != nr) { og_net_args_map.delete(&id); return 0; }
    return a;
}

static __always_inline struct og_net_args *og_net_fresh_args(void) {
    int zero = 0;
    struct og_net_args *a = og_net_scratch.lookup(&zero);
    if (!a) { return 0; }
    __builtin_memset(a, 0, sizeof(*a));
    return a;
}

static __always_inline void og_net_emit_addr(u32 type, s64 ret, struct og_net_args *a) {
    struct og_net_addr_rec *r = og_reserve(sizeof(*r), type, ret);
    if (!r) { return; }
    r->fd = a->fd;
    r->aux = a->aux;
    r->sa_len = a->sa_len;
    __builtin_memcpy(r->sa, a->sa, OG_NET_SA_LEN);
    og_events.ringbuf_submit(r, 0);
}

static __always_inline void og_net_forget_fd(s64 fd) {
    if (fd < 0) { return; }
    struct og_net_fdkey k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = (s32)fd};
    og_net_dns_socks.delete(&k);
}

// Copy one DNS payload into a new record; `sa` may be 0 (connected socket).
static __always_inline void og_net_emit_dns(s64 ret, s32 fd, u8 via, u8 index, u64 buf, u64 len,
                                            const u8 *sa) {
    struct og_net_dns_rec *r = og_reserve(sizeof(*r), OG_T_NET_DNS, ret);
    if (!r) { return; }
    r->fd = fd;
    r->len = (u32)len;
    r->via = via;
    r->msg_index = index;
    struct og_net_fdkey k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd};
    struct og_net_dns_dest *d = sa ? 0 : og_net_dns_socks.lookup(&k);
    if (sa) { __builtin_memcpy(r->sa, sa, OG_NET_SA_LEN); }
    else if (d) { __builtin_memcpy(r->sa, d->sa, OG_NET_SA_LEN); }
    else { __builtin_memset(r->sa, 0, OG_NET_SA_LEN); }
    u32 n = len > OG_NET_DNS_CAP ? OG_NET_DNS_CAP : (u32)len;
    asm volatile("" : "+r"(n));     // keep clang from bounding a copy instead of n itself
    if (n > OG_NET_DNS_CAP) { n = OG_NET_DNS_CAP; }
    if (!buf || bpf_probe_read_user(r->payload, n, (const void *)buf) != 0) { n = 0; }
    r->caplen = (u16)n;
    og_events.ringbuf_submit(r, 0);
}

#if OG_NET_HAVE_SOCKET
TRACEPOINT_PROBE(syscalls, sys_enter_socket) {
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->family = args->family;
    a->type = args->type;
    a->protocol = args->protocol;
    u64 id = bpf_get_current_pid_tgid();
    a->nr = OG_NET_NR_SOCKET;
    if (og_net_args_map.update(&id, a)) { og_count_stash_drop(); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_socket) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_SOCKET);
    if (!a) { return 0; }
    s64 ret = args->ret;
    og_net_forget_fd(ret);
    s32 fam = a->family;
    s32 kind = a->type & 0xf;
    // AF_UNIX and AF_NETLINK (netlink sockets are SOCK_RAW) are local plumbing: not sent.
    int wanted = fam == OG_NET_AF_INET || fam == OG_NET_AF_INET6 || fam == OG_NET_AF_PACKET
        || (kind == OG_NET_SOCK_RAW && fam != OG_NET_AF_UNIX && fam != OG_NET_AF_NETLINK);
    if (wanted) {
        struct og_net_socket_rec *r = og_reserve(sizeof(*r), OG_T_NET_SOCKET, ret);
        if (r) {
            r->family = fam;
            r->type = a->type;
            r->protocol = a->protocol;
            r->_pad = 0;
            og_events.ringbuf_submit(r, 0);
        }
    }
    og_net_args_map.delete(&id);
    return 0;
}
#endif

#if OG_NET_HAVE_CONNECT
TRACEPOINT_PROBE(syscalls, sys_enter_connect) {
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->fd = args->fd;
    og_net_sa_enter(a, (u64)args->uservaddr, (u64)args->addrlen);
    if (!a->late_sa && !og_net_sa_is_inet(a->sa)) {
        // AF_UNIX is local plumbing; AF_UNSPEC dissolves a UDP association.
        og_net_forget_fd(a->fd);
        return 0;
    }
    u64 id = bpf_get_current_pid_tgid();
    a->nr = OG_NET_NR_CONNECT;
    if (og_net_args_map.update(&id, a)) { og_count_stash_drop(); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_connect) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_CONNECT);
    if (!a) { return 0; }
    if (a->late_sa) {
        og_net_sa_late(a);
        if (!og_net_sa_is_inet(a->sa)) {  // as at entry: local plumbing, or unreadable still
            og_net_forget_fd(a->fd);
            og_net_args_map.delete(&id);
            return 0;
        }
    }
    s64 ret = args->ret;
    og_net_emit_addr(OG_T_NET_CONNECT, ret, a);
    struct og_net_fdkey k = {.tgid = id >> 32, .fd = a->fd};
    if (og_net_sa_is_dns(a->sa) && (ret == 0 || ret == -OG_NET_EINPROGRESS)) {
        struct og_net_dns_dest dest = {};
        __builtin_memcpy(dest.sa, a->sa, OG_NET_SA_LEN);
        og_net_dns_socks.update(&k, &dest);
    } else {
        og_net_dns_socks.delete(&k);
    }
    og_net_args_map.delete(&id);
    return 0;
}
#endif

#if OG_NET_HAVE_ACCEPT || OG_NET_HAVE_ACCEPT4
static __always_inline int og_net_accept_enter(s32 fd, u64 upeer, u64 ulen, u32 flags) {
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->fd = fd;
    a->aux = flags;
    a->uptr = upeer;
    a->ulen = ulen;
    u64 id = bpf_get_current_pid_tgid();
    a->nr = OG_NET_NR_ACCEPT;
    if (og_net_args_map.update(&id, a)) { og_count_stash_drop(); }
    return 0;
}

static __always_inline int og_net_accept_exit(s64 ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_ACCEPT);
    if (!a) { return 0; }
    og_net_args_map.delete(&id);
    if (ret == -OG_NET_EAGAIN) { return 0; }   // an idle non-blocking listener: not an event
    og_net_forget_fd(ret);
    if (ret >= 0 && a->uptr && a->ulen) {
        // the kernel wrote the peer address and its length back to the caller's buffers
        s32 len = 0;
        bpf_probe_read_user(&len, sizeof(len), (const void *)a->ulen);
        a->sa_len = og_net_read_sa(a->sa, a->uptr, (u64)(len < 0 ? 0 : len));
    }
    og_net_emit_addr(OG_T_NET_ACCEPT, ret, a);
    return 0;
}
#endif

#if OG_NET_HAVE_ACCEPT
TRACEPOINT_PROBE(syscalls, sys_enter_accept) {
    return og_net_accept_enter(args->fd, (u64)args->upeer_sockaddr, (u64)args->upeer_addrlen, 0);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept) {
    return og_net_accept_exit(args->ret);
}
#endif

#if OG_NET_HAVE_ACCEPT4
TRACEPOINT_PROBE(syscalls, sys_enter_accept4) {
    return og_net_accept_enter(args->fd, (u64)args->upeer_sockaddr, (u64)args->upeer_addrlen,
                               (u32)args->flags);
}
TRACEPOINT_PROBE(syscalls, sys_exit_accept4) {
    return og_net_accept_exit(args->ret);
}
#endif

#if OG_NET_HAVE_BIND
TRACEPOINT_PROBE(syscalls, sys_enter_bind) {
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->fd = args->fd;
    og_net_sa_enter(a, (u64)args->umyaddr, (u64)args->addrlen);
    if (!a->late_sa && !og_net_sa_is_inet(a->sa)) { return 0; }
    u64 id = bpf_get_current_pid_tgid();
    a->nr = OG_NET_NR_BIND;
    if (og_net_args_map.update(&id, a)) { og_count_stash_drop(); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_bind) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_BIND);
    if (!a) { return 0; }
    og_net_sa_late(a);
    if (og_net_sa_is_inet(a->sa)) { og_net_emit_addr(OG_T_NET_BIND, args->ret, a); }
    og_net_args_map.delete(&id);
    return 0;
}
#endif

#if OG_NET_HAVE_LISTEN
TRACEPOINT_PROBE(syscalls, sys_enter_listen) {
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->fd = args->fd;
    a->aux = (u32)args->backlog;
    u64 id = bpf_get_current_pid_tgid();
    a->nr = OG_NET_NR_LISTEN;
    if (og_net_args_map.update(&id, a)) { og_count_stash_drop(); }
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_listen) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_LISTEN);
    if (!a) { return 0; }
    og_net_emit_addr(OG_T_NET_LISTEN, args->ret, a);
    og_net_args_map.delete(&id);
    return 0;
}
#endif

// ---- DNS: only sends to a DNS port (explicit destination or a socket connected to one) ------

static __always_inline int og_net_is_dns_fd(s32 fd) {
    struct og_net_fdkey k = {.tgid = bpf_get_current_pid_tgid() >> 32, .fd = fd};
    return og_net_dns_socks.lookup(&k) != 0;
}

static __always_inline void og_net_stash_send(struct og_net_args *a) {
    u64 id = bpf_get_current_pid_tgid();
    a->nr = OG_NET_NR_SEND;
    if (og_net_args_map.update(&id, a)) { og_count_stash_drop(); }
}

// sendmsg: the destination and the first iovec from the msghdr at `m`. Returns 1 when a part
// could not be read (a page not resident at entry: exit reads it all again).
static __always_inline int og_net_read_msg(struct og_net_args *a, u64 m) {
    struct og_net_umsghdr h = {};
    if (bpf_probe_read_user(&h, sizeof(h), (const void *)m) != 0) { return 1; }
    if (!a->connected && h.name) {
        u64 namelen = (u64)(h.namelen < 0 ? 0 : h.namelen);
        a->sa_len = og_net_read_sa(a->sa, h.name, namelen);
        if (!a->sa_len && namelen >= 2) { return 1; }
    }
    if (h.iovlen && h.iov) {
        struct og_net_iovec iov = {};
        if (bpf_probe_read_user(&iov, sizeof(iov), (const void *)h.iov) != 0) { return 1; }
        a->uptr = iov.base;   // first iovec only: resolvers send a query as one buffer
        a->ulen = iov.len;
    }
    return 0;
}

static __always_inline int og_net_send_exit(s64 ret) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_SEND);
    if (!a) { return 0; }
    if (a->late_msg) { og_net_read_msg(a, a->late_msg); }
    og_net_sa_late(a);
    if (!a->connected && !og_net_sa_is_dns(a->sa)) {  // read late, and not a DNS destination
        og_net_args_map.delete(&id);
        return 0;
    }
    og_net_emit_dns(ret, a->fd, a->via, 0, a->uptr, a->ulen, a->connected ? 0 : a->sa);
    og_net_args_map.delete(&id);
    return 0;
}

#if OG_NET_HAVE_SENDTO
TRACEPOINT_PROBE(syscalls, sys_enter_sendto) {
    s32 fd = args->fd;
    int connected = og_net_is_dns_fd(fd);
    if (!connected && !args->addr) { return 0; }
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    if (!connected) {
        og_net_sa_enter(a, (u64)args->addr, (u64)args->addr_len);
        if (!a->late_sa && !og_net_sa_is_dns(a->sa)) { return 0; }
    }
    a->fd = fd;
    a->via = OG_NET_VIA_SENDTO;
    a->connected = connected;
    a->uptr = (u64)args->buff;
    a->ulen = (u64)args->len;
    og_net_stash_send(a);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendto) {
    return og_net_send_exit(args->ret);
}
#endif

#if OG_NET_HAVE_SENDMSG
TRACEPOINT_PROBE(syscalls, sys_enter_sendmsg) {
    s32 fd = args->fd;
    int connected = og_net_is_dns_fd(fd);
    struct og_net_umsghdr m = {};
    // msghdr, name or iovec in a page not resident yet: decided at exit (og_net_read_msg)
    int unread = bpf_probe_read_user(&m, sizeof(m), (const void *)args->msg) != 0;
    if (!unread && !connected && !m.name) { return 0; }
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->connected = connected;
    if (!unread) {
        unread = og_net_read_msg(a, (u64)args->msg);
        if (!unread && !connected && !og_net_sa_is_dns(a->sa)) { return 0; }
    }
    a->late_msg = unread ? (u64)args->msg : 0;
    a->fd = fd;
    a->via = OG_NET_VIA_SENDMSG;
    og_net_stash_send(a);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_sendmsg) {
    return og_net_send_exit(args->ret);
}
#endif

#if OG_NET_HAVE_SENDMMSG
TRACEPOINT_PROBE(syscalls, sys_enter_sendmmsg) {
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->fd = args->fd;
    a->connected = og_net_is_dns_fd(a->fd);
    a->via = OG_NET_VIA_SENDMMSG;
    a->uptr = (u64)args->mmsg;
    a->ulen = (u64)args->vlen;
    if (!a->connected) {
        // unconnected: worth an exit visit only if the first message names a DNS port, or
        // when its header or name is in a page not resident yet (exit reads them all again)
        struct og_net_umsghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (const void *)args->mmsg) == 0) {
            if (!m.name) { return 0; }
            u8 sa[OG_NET_SA_LEN] = {};
            u64 namelen = (u64)(m.namelen < 0 ? 0 : m.namelen);
            if (og_net_read_sa(sa, m.name, namelen) && !og_net_sa_is_dns(sa)) { return 0; }
        }
    }
    og_net_stash_send(a);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_sendmmsg) {
    u64 id = bpf_get_current_pid_tgid();
    struct og_net_args *a = og_net_take(id, OG_NET_NR_SEND);
    if (!a) { return 0; }
    s64 ret = args->ret;
    s32 fd = a->fd;
    u8 connected = a->connected;
    u64 base = a->uptr;
    u64 vlen = a->ulen;
    og_net_args_map.delete(&id);
    // ret = messages sent: later ones were not (glibc then resends them with sendto); on
    // failure the first message stands for the attempt
    u64 sent = ret >= 0 ? (u64)ret : 1;
    if (sent > vlen) { sent = vlen; }
    #pragma unroll
    for (int i = 0; i < OG_NET_MMSG_MAX; i++) {
        if (i >= sent) { break; }
        struct og_net_mmsghdr m = {};
        if (bpf_probe_read_user(&m, sizeof(m), (const void *)(base + i * sizeof(m))) != 0) {
            break;
        }
        u8 sa[OG_NET_SA_LEN] = {};
        if (!connected) {
            og_net_read_sa(sa, m.hdr.name, (u64)(m.hdr.namelen < 0 ? 0 : m.hdr.namelen));
            if (!og_net_sa_is_dns(sa)) { continue; }
        }
        struct og_net_iovec iov = {};
        if (m.hdr.iovlen && m.hdr.iov) {
            bpf_probe_read_user(&iov, sizeof(iov), (const void *)m.hdr.iov);
        }
        og_net_emit_dns(ret, fd, OG_NET_VIA_SENDMMSG, (u8)i, iov.base, iov.len,
                        connected ? 0 : sa);
    }
    return 0;
}
#endif

#if OG_NET_HAVE_WRITE
// sys_enter_write runs for every write on the host: one hash lookup, then out.
TRACEPOINT_PROBE(syscalls, sys_enter_write) {
    s32 fd = args->fd;
    if (!og_net_is_dns_fd(fd)) { return 0; }
    if (og_is_self()) { return 0; }
    struct og_net_args *a = og_net_fresh_args();
    if (!a) { return 0; }
    a->fd = fd;
    a->via = OG_NET_VIA_WRITE;
    a->connected = 1;
    a->uptr = (u64)args->buf;
    a->ulen = (u64)args->count;
    og_net_stash_send(a);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_write) {
    return og_net_send_exit(args->ret);
}
#endif

#if OG_NET_HAVE_STATE
#define OG_NET_TCP_SYN_SENT 2
#define OG_NET_TCP_SYN_RECV 3
#define OG_NET_TCP_FIN_WAIT1 4
#define OG_NET_TCP_LAST_ACK 9

// Process context (listen()): count the listener as watched or not for its port.
static __always_inline void og_net_on_listen(u64 sk, u16 port) {
    struct og_net_listener l = {.port = port, .watched = !og_is_self()};
    og_net_listeners.update(&sk, &l);
    struct og_net_listen_count zero = {};
    struct og_net_listen_count *c = og_net_listen_ports.lookup_or_try_init(&port, &zero);
    if (!c) { return; }
    if (l.watched) { __sync_fetch_and_add(&c->watched, 1); }
    else { __sync_fetch_and_add(&c->unwatched, 1); }
}

static __always_inline void og_net_on_unlisten(u64 sk) {
    struct og_net_listener *l = og_net_listeners.lookup(&sk);
    if (!l) { return; }
    u16 port = l->port;
    struct og_net_listen_count *c = og_net_listen_ports.lookup(&port);
    if (c) {
        if (l->watched) { __sync_fetch_and_add(&c->watched, -1); }
        else { __sync_fetch_and_add(&c->unwatched, -1); }
        if (c->watched == 0 && c->unwatched == 0) { og_net_listen_ports.delete(&port); }
    }
    og_net_listeners.delete(&sk);
}

// A passive socket on `port` (our local port): sent unless only unwatched tasks listen there
// (as seen at listen(), else as learnt from earlier closes on the port).
static __always_inline int og_net_port_unwatched(u16 port) {
    struct og_net_listen_count *c = og_net_listen_ports.lookup(&port);
    if (c) { return c->watched == 0 && c->unwatched > 0; }
    u8 *learnt = og_net_port_learnt.lookup(&port);
    return learnt && *learnt == 0;
}

// Process context (close()/shutdown(): the new state is FIN_WAIT1 or LAST_ACK) of an accepted
// connection: its closer tells whether the port is served by a watched task.
static __always_inline void og_net_on_passive_close(struct og_net_conn *conn, u16 port) {
    u8 watched = !og_is_self();
    og_net_port_learnt.update(&port, &watched);
    if (!watched) { conn->skip = 1; }
}

// Process context (connect(), or sendto() with MSG_FASTOPEN): remember the socket's owner.
static __always_inline void og_net_on_syn_sent(u64 sk) {
    struct og_net_conn conn = {.fd = -1};
    if (og_is_self()) {
        conn.skip = 1;
    } else {
        u64 id = bpf_get_current_pid_tgid();
        conn.tgid = id >> 32;
        struct og_net_args *a = og_net_args_map.lookup(&id);
        if (a && a->nr == OG_NET_NR_CONNECT) { conn.fd = a->fd; }
    }
    og_net_conns.update(&sk, &conn);
}

// TCP only; ESTABLISHED (from any state) and CLOSE (except a listener closing) are sent; the
// other transitions only feed the owner and listener maps above.
TRACEPOINT_PROBE(sock, inet_sock_set_state) {
    if (args->protocol != OG_NET_IPPROTO_TCP) { return 0; }
    s32 ns = args->newstate;
    s32 os = args->oldstate;
    u64 sk = (u64)args->skaddr;
    if (ns == OG_NET_TCP_SYN_SENT) { og_net_on_syn_sent(sk); return 0; }
    if (ns == OG_NET_TCP_LISTEN) { og_net_on_listen(sk, args->sport); return 0; }
    if (os == OG_NET_TCP_LISTEN) { og_net_on_unlisten(sk); return 0; }
    struct og_net_conn *conn = og_net_conns.lookup(&sk);
    if (ns == OG_NET_TCP_FIN_WAIT1 || ns == OG_NET_TCP_LAST_ACK) {
        if (conn && conn->passive && !conn->skip) { og_net_on_passive_close(conn, args->sport); }
        return 0;
    }
    if (ns != OG_NET_TCP_ESTABLISHED && ns != OG_NET_TCP_CLOSE) { return 0; }
    u32 owner = 0;
    s32 owner_fd = -1;
    if (conn) {
        u8 skip = conn->skip;
        owner = conn->tgid;
        owner_fd = conn->fd;
        if (ns == OG_NET_TCP_CLOSE) { og_net_conns.delete(&sk); }
        if (skip) { return 0; }
    } else if (os == OG_NET_TCP_SYN_RECV) {
        // accepted: remembered, so its close can teach the port's verdict, and not sent at
        // all when only unwatched tasks listen there (its CLOSE is then not sent either)
        u8 skip = og_net_port_unwatched(args->sport);
        if (ns == OG_NET_TCP_ESTABLISHED) {
            struct og_net_conn accepted = {.fd = -1, .skip = skip, .passive = 1};
            og_net_conns.update(&sk, &accepted);
        }
        if (skip) { return 0; }
    }
    struct og_net_state_rec *r = og_reserve(sizeof(*r), OG_T_NET_STATE, 0);
    if (!r) { return 0; }
    r->skaddr = sk;
    r->oldstate = os;
    r->newstate = ns;
    r->sport = args->sport;
    r->dport = args->dport;
    r->family = args->family;
    r->protocol = args->protocol;
    r->owner_tgid = owner;
    r->owner_fd = owner_fd;
    if (args->family == OG_NET_AF_INET6) {
        __builtin_memcpy(r->saddr, args->saddr_v6, 16);
        __builtin_memcpy(r->daddr, args->daddr_v6, 16);
    } else {
        __builtin_memset(r->saddr, 0, 16);
        __builtin_memset(r->daddr, 0, 16);
        __builtin_memcpy(r->saddr, args->saddr, 4);
        __builtin_memcpy(r->daddr, args->daddr, 4);
    }
    og_events.ringbuf_submit(r, 0);
    return 0;
}
#endif
