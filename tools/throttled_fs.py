"""throttled_fs: a folder shown read-only at a mount point, read at no more than a given rate: a slow
disk on a machine whose disk is faster than the CPU, for the bench rows where the disk must be the
limit (bench_disk). A FUSE filesystem that speaks the kernel's protocol on /dev/fuse itself, so it
needs no library, only root and the fuse module.

    python tools/throttled_fs.py SOURCE MOUNTPOINT --mb-s 300

mounts, prints "ready", serves until SIGTERM or SIGINT, then unmounts. Reads are served in the
kernel's requests (its read-ahead: 128 KB by default, as on a plain disk) and paced so that the bytes
served never run ahead of the rate; the page cache keeps what was read until caches are dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import signal
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# The kernel's FUSE protocol (include/uapi/linux/fuse.h), version 7.31: what this filesystem answers.
MAJOR, MINOR = 7, 31
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
INIT_IN = struct.Struct("<IIII")  # major, minor, max_readahead, flags
INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")  # ... max_pages, map_alignment, flags2, max_stack_depth; 64 bytes
ATTR = struct.Struct("<QQQQQQIIIIIIIIII")  # ino, size, blocks, a/m/ctime, a/m/ctime nsec, mode, nlink, uid, gid,
#                                            rdev, blksize, flags
ENTRY_OUT = struct.Struct("<QQQQII")  # nodeid, generation, entry_valid, attr_valid, their nsec; then ATTR
ATTR_OUT = struct.Struct("<QII")  # attr_valid, its nsec, dummy; then ATTR
OPEN_OUT = struct.Struct("<QII")  # fh, open_flags, padding
READ_IN = struct.Struct("<QQII")  # fh, offset, size, read_flags (then lock_owner, flags, padding)
DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type; then the name, padded to 8 bytes
STATFS_OUT = struct.Struct("<QQQQQIIII24x")  # blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding

LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE, FLUSH, INIT = 1, 2, 3, 14, 15, 17, 18, 25, 26
OPENDIR, READDIR, RELEASEDIR, INTERRUPT, DESTROY, BATCH_FORGET = 27, 28, 29, 36, 38, 42
NO_REPLY = (FORGET, INTERRUPT, BATCH_FORGET)
ASYNC_READ = 1 << 0  # INIT flag: the kernel may have several reads in flight (its read-ahead)
KEEP_CACHE = 1 << 1  # OPEN flag: opening the file again keeps its pages in the page cache
VALID = 86400  # seconds the kernel may trust a name or an attribute: nothing here changes
BUFFER = 1 << 17  # for one request: the kernel asks for at least 8 KB, and sends no writes here
MS_RDONLY, MS_NOSUID, MS_NODEV, MNT_DETACH = 1, 2, 4, 2
PRIORITY = -10  # the server's nice value: a disk is not slowed by the CPU its reader uses (as root)
CAP_SYS_ADMIN = 21  # the capability mount(2) needs
STOP = 30  # seconds the server has to unmount and end once asked to


class Throttled:
    """The filesystem: the tree under `source`, read-only, served at most `rate` bytes a second."""

    def __init__(self, source: Path, rate: float) -> None:
        self.rate = rate
        self.paths: dict[int, Path] = {1: source}  # node id -> path; 1 is the root
        self.ids: dict[Path, int] = {source: 1}
        self.fds: dict[int, int] = {}  # node id -> an open descriptor, for reads
        self.due = 0.0  # when the bytes served so far may all have been read, at `rate`

    def node(self, path: Path) -> int:
        if path not in self.ids:
            self.ids[path] = len(self.paths) + 1
            self.paths[self.ids[path]] = path
        return self.ids[path]

    def attr(self, node: int) -> bytes:
        st = os.stat(self.paths[node])
        mode = (stat.S_IFDIR | 0o555) if stat.S_ISDIR(st.st_mode) else (stat.S_IFREG | 0o444)
        (a, a_ns), (m, m_ns), (c, c_ns) = (divmod(ns, 10**9) for ns in (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns))
        return ATTR.pack(node, st.st_size, -(-st.st_size // 512), a, m, c, a_ns, m_ns, c_ns,
                         mode, 2 if stat.S_ISDIR(mode) else 1, 0, 0, 0, 4096, 0)

    def pace(self, n: int) -> None:
        """Wait until `n` more bytes may be served without running ahead of the rate."""
        now = time.monotonic()
        start = max(self.due, now)
        if start > now:
            time.sleep(start - now)
        self.due = start + n / self.rate

    def answer(self, opcode: int, node: int, body: bytes) -> bytes:
        """The reply's body for one request; an OSError carries the error to send instead."""
        if opcode == INIT:
            major, minor, readahead, flags = INIT_IN.unpack_from(body)
            if major != MAJOR:
                raise OSError(errno.EPROTO, "FUSE major version")
            return INIT_OUT.pack(MAJOR, min(minor, MINOR), readahead, flags & ASYNC_READ, 16, 12, 4096, 1, 0, 0, 0, 0)
        if opcode == LOOKUP:
            path = self.paths[node] / body.rstrip(b"\0").decode("utf-8", "surrogateescape")
            if not path.exists():
                raise OSError(errno.ENOENT, "no such file")
            child = self.node(path)
            return ENTRY_OUT.pack(child, 0, VALID, VALID, 0, 0) + self.attr(child)
        if opcode == GETATTR:
            return ATTR_OUT.pack(VALID, 0, 0) + self.attr(node)
        if opcode in (OPEN, OPENDIR):
            return OPEN_OUT.pack(0, KEEP_CACHE if opcode == OPEN else 0, 0)
        if opcode == READ:
            _, offset, size, _ = READ_IN.unpack_from(body)
            if node not in self.fds:
                self.fds[node] = os.open(self.paths[node], os.O_RDONLY)
            data = os.pread(self.fds[node], size, offset)
            self.pace(len(data))
            return data
        if opcode == READDIR:
            _, offset, size, _ = READ_IN.unpack_from(body)
            return self.entries(node, offset, size)
        if opcode == STATFS:
            return STATFS_OUT.pack(0, 0, 0, 0, 0, 4096, 255, 4096, 0)
        if opcode in (RELEASE, FLUSH, RELEASEDIR, DESTROY):
            return b""
        raise OSError(errno.ENOSYS, "not served")

    def entries(self, node: int, offset: int, size: int) -> bytes:
        """The directory's entries from the `offset`-th on, as many as fit in `size` bytes."""
        out = b""
        names = sorted(os.listdir(self.paths[node]))
        for k, name in enumerate(names[offset:], offset + 1):
            raw = name.encode("utf-8", "surrogateescape")
            child = self.node(self.paths[node] / name)
            kind = 4 if (self.paths[node] / name).is_dir() else 8  # DT_DIR, DT_REG
            entry = DIRENT.pack(child, k, len(raw), kind) + raw
            entry += bytes(-len(entry) % 8)
            if len(out) + len(entry) > size:
                break
            out += entry
        return out

    def serve(self, fd: int) -> None:
        """Answer the kernel's requests until the filesystem is unmounted."""
        while True:
            try:
                request = os.read(fd, BUFFER)
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                if e.errno == errno.ENODEV:  # unmounted
                    return
                raise
            _, opcode, unique, node, *_ = IN_HEADER.unpack_from(request)
            if opcode in NO_REPLY:
                continue
            try:
                body, error = self.answer(opcode, node, request[IN_HEADER.size:]), 0
            except OSError as e:
                body, error = b"", -(e.errno or errno.EIO)
            try:
                os.writev(fd, [OUT_HEADER.pack(OUT_HEADER.size + len(body), error, unique), body])
            except OSError as e:
                if e.errno != errno.ENOENT:  # the request was interrupted meanwhile
                    raise
            if opcode == DESTROY:
                return


def mount(source: Path, target: Path) -> int:
    """Mount a FUSE filesystem at `target`; the descriptor its requests arrive on."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open("/dev/fuse", os.O_RDWR)
    options = f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()}"
    if libc.mount(str(source).encode(), str(target).encode(), b"fuse.throttled", MS_RDONLY | MS_NOSUID | MS_NODEV,
                  options.encode()) != 0:
        os.close(fd)
        raise OSError(ctypes.get_errno(), f"mount {target}: {os.strerror(ctypes.get_errno())}")
    return fd


def unmount(target: Path) -> None:
    ctypes.CDLL(None, use_errno=True).umount2(str(target).encode(), MNT_DETACH)


def usable() -> str | None:
    """Why a throttled mount cannot be made here, or None: it needs root with the right to mount
    (CAP_SYS_ADMIN, which a container may lack) and the kernel's FUSE device."""
    if os.geteuid() != 0:
        return "mounting needs root"
    status = Path("/proc/self/status").read_text()
    caps = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), 0)
    if not caps >> CAP_SYS_ADMIN & 1:
        return "mounting needs CAP_SYS_ADMIN, which this process lacks"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse (the fuse module is not loaded)"
    return None


@contextlib.contextmanager
def mounted(source: Path, target: Path, mb_s: float) -> Iterator[Path]:
    """`source` shown at `target`, read at most `mb_s` MB a second, by this script in a process of its own
    (away from the caller's CPU); unmounted on leaving."""
    proc = subprocess.Popen([sys.executable, __file__, str(source), str(target), "--mb-s", str(mb_s)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            proc.wait()
            raise OSError(f"throttled_fs: {proc.stderr.read().strip() if proc.stderr else ''}")
        yield target
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP)
        except subprocess.TimeoutExpired:  # a file still open on the mount keeps it served: stop anyway
            proc.kill()
            proc.wait()
            unmount(target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--mb-s", type=float, required=True, help="the most MB (10^6 bytes) a second served")
    a = parser.parse_args()
    source, target = a.source.resolve(), a.mountpoint.resolve()
    try:
        os.stat(target)
    except OSError as e:
        if e.errno == errno.ENOTCONN:  # a mount left by a server that died: nothing is served there
            unmount(target)
    target.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: unmount(target))  # (before the mount: no moment without them)
    signal.signal(signal.SIGINT, lambda *_: unmount(target))
    fd = mount(source, target)
    try:
        with contextlib.suppress(OSError):  # a root without CAP_SYS_NICE serves at its own priority
            os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
        print("ready", flush=True)
        Throttled(source, a.mb_s * 1e6).serve(fd)
    finally:
        unmount(target)
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
