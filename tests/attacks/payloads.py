"""Attack payloads (Python source for ``python_attack``) that more than one attack test runs."""

# A listener and a connected client in one process; ``client`` is the attacker's connection.
CONNECTED = r"""
import os, socket, subprocess, sys, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
client = socket.create_connection(srv.getsockname())
peer, _ = srv.accept()
"""

REVERSE_SHELL = CONNECTED + r"""
for fd in (0, 1, 2):
    os.dup2(client.fileno(), fd)
os.execv("/bin/sh", ["sh", "-c", "sleep 0.3"])
"""

PIPE_SHELL = r"""
import os
r, w = os.pipe()
os.dup2(r, 0)
os.execv("/bin/sh", ["sh", "-c", "sleep 0.3"])
"""

PTRACE_ATTACH = r"""
import ctypes, os, signal, time
libc = ctypes.CDLL(None, use_errno=True)
victim = os.fork()
if victim == 0:
    time.sleep(30); os._exit(0)
assert libc.ptrace(16, victim, 0, 0) == 0          # PTRACE_ATTACH
os.waitpid(victim, os.WUNTRACED)
libc.ptrace(17, victim, 0, 0)                      # PTRACE_DETACH
os.kill(victim, signal.SIGKILL); os.waitpid(victim, 0)
print(victim)
"""

# The payload lives a moment, as implants do: the agent reads /proc/<pid>/exe after the exec
# record arrives, and a process that is already gone leaves exe-derived flags unknown (docs).
MEMFD_EXEC = r"""
import os
fd = os.memfd_create("payload", os.MFD_CLOEXEC)
with open("/bin/sleep", "rb") as f:
    os.write(fd, f.read())
pid = os.fork()
if pid == 0:
    os.execve(fd, ["payload", "0.3"], {})    # fexecve: execveat(fd, "", AT_EMPTY_PATH)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
"""

# A container root the way runtimes build one: overlayfs (image layer read-only below, the
# container's writable layer above), pivot_root into it in a private mount namespace. The
# image layer gets /bin/sleep; the attacker then writes /payload into the writable layer.
OVERLAY_CONTAINER = r"""
import ctypes, os, shutil, subprocess, sys
base = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
def ok(rc):
    assert rc == 0, os.strerror(ctypes.get_errno())
lower, upper, work, merged = (os.path.join(base, d) for d in ("lower", "upper", "work", "merged"))
for d in (lower, upper, work, merged):
    os.makedirs(d, exist_ok=True)
for d in ("usr", "proc", "old", "tmp"):
    os.makedirs(os.path.join(lower, d), exist_ok=True)
for d in ("bin", "sbin", "lib", "lib64"):                           # merged-/usr image
    if not os.path.lexists(os.path.join(lower, d)):
        os.symlink("usr/" + d, os.path.join(lower, d))
ok(libc.unshare(0x00020000))                                        # CLONE_NEWNS
ok(libc.mount(b"none", b"/", None, (1 << 14) | (1 << 18), None))    # MS_REC|MS_PRIVATE
opts = f"lowerdir={lower},upperdir={upper},workdir={work}".encode()
ok(libc.mount(b"overlay", merged.encode(), b"overlay", 0, opts))
ok(libc.mount(b"/usr", os.path.join(merged, "usr").encode(), None, 4096 | 16384, None))  # MS_BIND|MS_REC
ok(libc.syscall(155, merged.encode(), os.path.join(merged, "old").encode()))  # pivot_root
os.chdir("/")
ok(libc.umount2(b"/old", 2))                                        # MNT_DETACH
ok(libc.mount(b"proc", b"/proc", b"proc", 0, None))
shutil.copy("/usr/bin/sleep", "/payload")                           # the drop
os.chmod("/payload", 0o755)
subprocess.run(["/payload", "0.3"], check=True)                     # ... and execute
subprocess.run(["/usr/bin/sleep", "0.3"], check=True)               # near miss: image binary
shutil.copy("/usr/bin/dash", "/payload-sh")                         # a dropped shell ...
os.chmod("/payload-sh", 0o755)
subprocess.run(["/payload-sh", "-c", "/usr/bin/true; /usr/bin/sleep 0.3"], check=True)
"""                                                                 # ... runs image binaries

# Python source defining TINY_ELF: a complete x86-64 executable (ELF header, one PT_LOAD, three
# instructions: exit_group(0)) that exits before the agent can read anything of it in /proc,
# as a dropped implant that runs for a moment does. Smaller and quicker than /bin/true.
TINY_ELF = r"""
import struct
_code = bytes.fromhex("31ffb8e70000000f05")                 # xor edi,edi; mov eax,231; syscall
_base, _hdr = 0x400000, 64 + 56
TINY_ELF = (struct.pack("<4s5B7xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, 2, 62, 1,
                        _base + _hdr, 64, 0, 0, 64, 56, 1, 0, 0, 0)
            + struct.pack("<IIQQQQQQ", 1, 5, 0, _base, _base, _hdr + len(_code),
                          _hdr + len(_code), 0x1000)
            + _code)
"""

# Fileless execution through /proc/self/fd/N (not fexecve): the kernel names the process after
# the path's last component ("3"), and the payload is gone before its record is decoded, so
# only the memfd_create record seen before the exec can tell.
MEMFD_PROC_FD_EXEC = TINY_ELF + r"""
import os
fd = os.memfd_create("payload", 0)
os.write(fd, TINY_ELF)
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os.execv(f"/proc/self/fd/{fd}", ["payload"])
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
"""
