// Workload generator for bench/agent_overhead.py and bench/agent_throughput.py.
//
// A C loop shows the kernel-side cost of the probes best: no interpreter between syscalls.
// Runs in its own process (the agent filters only its own tgid), prints one line:
//   ok <iterations> <elapsed_ns> <user_ns> <sys_ns>
// elapsed covers the loop only (not process start-up); user/sys are this process's CPU time
// (plus its waited-for children for `exec`).
//
//   syscall_loop open PATH COUNT [r|w]   open(PATH, O_RDONLY or O_WRONLY) + close, COUNT times
//   syscall_loop exec COUNT              fork + execve(/bin/true) + waitpid, COUNT times
//   syscall_loop connect COUNT           TCP connect to a loopback listener (accepting thread
//                                        in this process) + close (RST: no TIME_WAIT pile-up)
//   syscall_loop rate PATH RATE SECONDS  O_WRONLY open + close of PATH at RATE per second,
//                                        paced against CLOCK_MONOTONIC in 1 ms ticks
//   syscall_loop mix PATH RATE SECONDS   the agent-shaped mix at RATE operations per second,
//                                        paced the same way; of every 64 operations: 1 fork +
//                                        execve(/bin/true) (reaped without waiting), 6 TCP
//                                        connects to a loopback listener, 5 DNS queries (UDP
//                                        sendto 127.0.0.1:53), 52 O_WRONLY opens of PATH

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t tv_ns(struct timeval tv) {
    return (int64_t)tv.tv_sec * 1000000000LL + (int64_t)tv.tv_usec * 1000LL;
}

static void report(long n, int64_t elapsed) {
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    printf("ok %ld %lld %lld %lld\n", n, (long long)elapsed,
           (long long)(tv_ns(self.ru_utime) + tv_ns(kids.ru_utime)),
           (long long)(tv_ns(self.ru_stime) + tv_ns(kids.ru_stime)));
}

static int die(const char *what) {
    fprintf(stderr, "syscall_loop: %s: %s\n", what, strerror(errno));
    return 1;
}

static int open_loop(const char *path, long count, int flags) {
    int64_t t0 = now_ns();
    for (long i = 0; i < count; i++) {
        int fd = open(path, flags);
        if (fd < 0) { return die(path); }
        close(fd);
    }
    report(count, now_ns() - t0);
    return 0;
}

static int exec_loop(long count) {
    char *argv[] = {"true", NULL};
    char *envp[] = {NULL};
    int64_t t0 = now_ns();
    for (long i = 0; i < count; i++) {
        pid_t pid = fork();
        if (pid < 0) { return die("fork"); }
        if (pid == 0) {
            execve("/bin/true", argv, envp);
            _exit(127);
        }
        int status = 0;
        if (waitpid(pid, &status, 0) < 0) { return die("waitpid"); }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "syscall_loop: /bin/true failed (status %d)\n", status);
            return 1;
        }
    }
    report(count, now_ns() - t0);
    return 0;
}

static void *accept_thread(void *arg) {
    int lfd = *(int *)arg;
    for (;;) {
        int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c >= 0) { close(c); }
        else if (errno == EBADF || errno == EINVAL) { break; }
    }
    return NULL;
}

// A loopback TCP listener on an ephemeral port with a thread accepting (and closing) in this
// process; `addr` gets its address. Returns 0, or 1 after saying why.
static int listener(struct sockaddr_in *addr) {
    static int lfd = -1;
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) { return die("socket"); }
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(*addr);
    if (bind(lfd, (struct sockaddr *)addr, sizeof(*addr)) < 0) { return die("bind"); }
    if (listen(lfd, 1024) < 0) { return die("listen"); }
    if (getsockname(lfd, (struct sockaddr *)addr, &alen) < 0) { return die("getsockname"); }
    pthread_t th;
    if (pthread_create(&th, NULL, accept_thread, &lfd) != 0) { return die("pthread_create"); }
    return 0;  // the accepting thread ends with the process
}

// One TCP connect to `addr` and a close with RST (no TIME_WAIT pile-up). 0, or 1 (said why).
static int connect_once(const struct sockaddr_in *addr) {
    static const struct linger lg = {.l_onoff = 1, .l_linger = 0};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) { return die("socket"); }
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    if (connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0) { return die("connect"); }
    close(fd);
    return 0;
}

static int connect_loop(long count) {
    struct sockaddr_in addr;
    if (listener(&addr)) { return 1; }
    int64_t t0 = now_ns();
    for (long i = 0; i < count; i++) {
        if (connect_once(&addr)) { return 1; }
    }
    report(count, now_ns() - t0);
    return 0;
}

static int rate_loop(const char *path, double rate, double seconds) {
    int64_t t0 = now_ns();
    int64_t end = t0 + (int64_t)(seconds * 1e9);
    long done = 0;
    for (;;) {
        int64_t now = now_ns();
        if (now >= end) { break; }
        long due = (long)((double)(now - t0) * rate / 1e9);
        while (done < due) {
            int fd = open(path, O_WRONLY);
            if (fd < 0) { return die(path); }
            close(fd);
            done++;
        }
        struct timespec tick = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&tick, NULL);
    }
    report(done, now_ns() - t0);
    return 0;
}

// A DNS query for mix.otelguard.test, type A (what a resolver sends; nothing answers it).
static const unsigned char DNS_QUERY[] = {
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    3, 'm', 'i', 'x', 8, 'o', 't', 'e', 'l', 'g', 'u', 'a', 'r', 'd', 4, 't', 'e', 's', 't', 0,
    0x00, 0x01, 0x00, 0x01};

// Operation i of the mix (i % 64 picks which: see the usage above). 0, or 1 (said why).
static int mix_op(long i, const char *path, const struct sockaddr_in *tcp, int udp,
                  const struct sockaddr_in *dns) {
    static char *const argv[] = {"true", NULL};
    static char *const envp[] = {NULL};
    long k = i % 64;
    if (k == 0) {
        pid_t pid = fork();
        if (pid < 0) { return die("fork"); }
        if (pid == 0) {
            execve("/bin/true", argv, envp);
            _exit(127);
        }
        return 0;
    }
    if (k % 10 == 1 && k < 60) {  // 1, 11, 21, 31, 41, 51: 6 connects
        return connect_once(tcp);
    }
    if (k % 10 == 2 && k < 50) {  // 2, 12, 22, 32, 42: 5 DNS queries
        if (sendto(udp, DNS_QUERY, sizeof(DNS_QUERY), 0, (const struct sockaddr *)dns,
                   sizeof(*dns)) < 0) {
            return die("sendto");
        }
        return 0;
    }
    int fd = open(path, O_WRONLY);
    if (fd < 0) { return die(path); }
    close(fd);
    return 0;
}

static int mix_loop(const char *path, double rate, double seconds) {
    struct sockaddr_in tcp;
    if (listener(&tcp)) { return 1; }
    int udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (udp < 0) { return die("socket"); }
    struct sockaddr_in dns = {.sin_family = AF_INET, .sin_port = htons(53)};
    dns.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int64_t t0 = now_ns();
    int64_t end = t0 + (int64_t)(seconds * 1e9);
    long done = 0;
    int status;
    for (;;) {
        int64_t now = now_ns();
        if (now >= end) { break; }
        long due = (long)((double)(now - t0) * rate / 1e9);
        while (done < due) {
            if (mix_op(done, path, &tcp, udp, &dns)) { return 1; }
            done++;
            if (done % 64 == 0) {  // behind a rate it cannot reach: stop on time, reap
                while (waitpid(-1, &status, WNOHANG) > 0) {}
                if (now_ns() >= end) { break; }
            }
        }
        while (waitpid(-1, &status, WNOHANG) > 0) {}
        struct timespec tick = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&tick, NULL);
    }
    int64_t elapsed = now_ns() - t0;
    while (waitpid(-1, &status, 0) > 0) {}  // the last children, so their CPU is counted
    report(done, elapsed);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "open") == 0) {
        int flags = (argc >= 5 && argv[4][0] == 'w') ? O_WRONLY : O_RDONLY;
        return open_loop(argv[2], atol(argv[3]), flags);
    }
    if (argc == 3 && strcmp(argv[1], "exec") == 0) { return exec_loop(atol(argv[2])); }
    if (argc == 3 && strcmp(argv[1], "connect") == 0) { return connect_loop(atol(argv[2])); }
    if (argc == 5 && strcmp(argv[1], "rate") == 0) {
        return rate_loop(argv[2], atof(argv[3]), atof(argv[4]));
    }
    if (argc == 5 && strcmp(argv[1], "mix") == 0) {
        return mix_loop(argv[2], atof(argv[3]), atof(argv[4]));
    }
    fprintf(stderr, "usage: syscall_loop open PATH COUNT [r|w] | exec COUNT | connect COUNT | "
                    "rate PATH RATE SECONDS | mix PATH RATE SECONDS\n");
    return 2;
}
