"""Whole-file hashes in one read of the file, beside a walk of the same bytes in the caller's thread
(verify's index). The walk leads: `follow(desc, on_read)` runs `on_read(n)` for each CHUNK boundary n
in order (and at the end of the file; none for an empty file), and `on_read` reads the bytes before n
itself, while a thread asks the kernel for the pages AHEAD of it. Behind the walk, a read thread copies
the bytes it has passed, CHUNK by CHUNK, into a ring of chunk buffers, and each hash, in a thread of
its own, hashes those same buffers: the file leaves the page cache once for all the hashes, and a
buffer is read into again only once every hash is past it. The walk waits only where the slowest hash
is its trail behind it. Two paces:

    alone     (verify alone) the trail is LAG, the ring's size: hashes and walk keep together.
    followed  (verify going on to mds, stages/one_read.py) the trail is TRAIL, the ring two chunks, and
              the read and the hashes run at a low CPU priority (Linux): the walk, and mds after it,
              are not held to the slowest hash, which takes the CPU they leave idle (mds waits on the
              disk).

The walk's small sequential reads, with the read-ahead beside them, keep a slow disk streaming where
one thread's large reads leave it idle between them (make bench's read-limited rows, bench_disk).
`digests()` waits for every hash, and an error in any thread is raised in the caller's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import HASHERS
from .console import progress

CHUNK = 8 << 20
LAG = 64 << 20  # alone: bytes the walk may lead the slowest hash by, the ring's buffers
TRAIL = 2 << 30  # followed: bytes the walk may lead the slowest hash by (still in the page cache)
AHEAD = 16 * CHUNK  # bytes the kernel is asked to read ahead of the walk (a slow disk streams: bench_disk)
PIECE = 128 << 10  # a read-ahead request the kernel honours whole where the device's read-ahead is not known
LOW = 10  # followed: added to the read's and the hashes' nice value (the walk first; still moving on a busy machine)
NICEST = 19  # the highest nice value Linux gives
SYSFS = Path("/sys")  # where the kernel says each device's read-ahead


class Ring:
    """The ring, its read thread, the read-ahead and a thread per hash, behind the caller's walk (see the
    module's docstring); `followed`: the followed pace."""

    def __init__(self, path: Path, algorithms: list[str], followed: bool = False) -> None:
        self.size = path.stat().st_size
        self.followed = followed
        self.slots = 2 if followed else max(2, LAG // CHUNK)  # chunks the ring holds (each costs its first touch)
        self.trail = TRAIL if followed else LAG  # bytes the walk may lead the slowest hash by
        self.moved = threading.Condition()
        self.stopped = False
        self.walked = 0  # bytes the caller's walk has passed: the read goes no further
        self.ring: list[bytearray] = []  # grown to `slots` buffers as the read first needs them
        self.ahead = AheadThread(self)
        self.reader = ReadThread(self)
        self.threads = [HashThread(self, alg, HASHERS[alg]()) for alg in algorithms]
        self.fd = os.open(path, os.O_RDONLY)
        try:
            for t in self.every_thread():
                t.start()
        except BaseException:
            self.stop()  # the threads started so far, and the file
            raise

    def slowest(self) -> int:
        """Bytes hashed by the slowest hash (one that failed counts as done)."""
        return min((t.at for t in self.threads), default=self.size)

    def may_read(self, at: int) -> bool:
        """Whether the read may go on to the chunk at byte `at`: the walk has passed it, and the ring has room."""
        return at < self.walked and at < self.slowest() + self.slots * CHUNK

    def buffer(self, at: int) -> memoryview:
        """The ring's buffer for the chunk at byte `at`, made the first time the read needs it."""
        k = at // CHUNK % self.slots
        while len(self.ring) <= k:
            self.ring.append(bytearray(CHUNK))
        return memoryview(self.ring[k])

    def every_thread(self) -> list[RingThread]:
        return [self.ahead, self.reader, *self.threads]

    def started(self, thread: RingThread) -> None:
        """Run first in each of the ring's threads: followed, the read and the hashes drop their priority."""
        if self.followed and thread is not self.ahead and sys.platform == "linux":  # a nice value per thread
            tid = threading.get_native_id()  # (the read-ahead stays: the walk waits on what it asks for)
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, tid, min(NICEST, os.getpriority(os.PRIO_PROCESS, tid) + LOW))

    def follow(self, desc: str, on_read: Callable[[int], None]) -> None:
        """Run `on_read(n)` for each CHUNK boundary n (and the end), in order, waiting only where the
        slowest hash is the trail behind n (or behind the walk, whichever is nearer); a progress bar with it."""
        with progress(self.size, desc) as bar:
            while self.walked < self.size:
                n = min(self.size, (self.walked // CHUNK + 1) * CHUNK)
                with self.moved:
                    self.moved.wait_for(lambda at=n: self.slowest() >= min(at - self.trail, self.walked)
                                        or self.failed() is not None)
                if (error := self.failed()) is not None:
                    raise error
                on_read(n)
                bar.update(n - self.walked)
                with self.moved:
                    self.walked = n
                    self.moved.notify_all()

    def failed(self) -> BaseException | None:
        return next((t.error for t in self.every_thread() if t.error is not None), None)

    def digests(self) -> dict[str, str]:
        """Wait for every hash; their hex digests (a read or a hash that failed raises its error here)."""
        for t in self.every_thread():
            t.join()
        if (error := self.failed()) is not None:
            raise error
        return {t.alg: t.hasher.hexdigest() for t in self.threads}

    def stop(self) -> None:
        """End every thread (where they are) and close the file."""
        with self.moved:
            self.stopped = True
            self.moved.notify_all()
        for t in self.every_thread():
            if t.ident is not None:  # started
                t.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def piece_size(fd: int, sysfs: Path = SYSFS) -> int:
    """Bytes one read-ahead request for the file may ask for and be honoured whole: the kernel caps each
    at its device's read-ahead (read_ahead_kb in `sysfs`: 128 KB by default, 8 MB on some virtual disks),
    and a request per PIECE where that is larger costs the asking thread a pass through the interpreter's
    lock each. The device's is its disk's where it is a partition; PIECE where none is known (tmpfs)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    block = sysfs / "dev" / "block" / device
    for queue in (block / "queue", block / ".." / "queue", sysfs / "class" / "bdi" / device):  # a disk, a partition
        try:  # (its link's folder is in its disk's), another device with a read-ahead (a network filesystem)
            return max(PIECE, int((queue / "read_ahead_kb").read_text()) << 10)
        except (OSError, ValueError):
            continue
    return PIECE


def read_ahead(fd: int, at: int, n: int, piece: int) -> None:
    """Ask the kernel to bring bytes [at, at + n) of the file into the page cache, `piece` bytes a request,
    where the system has posix_fadvise (a hint: nothing depends on it, and a refusal is ignored)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            for start in range(at, at + n, piece):
                os.posix_fadvise(fd, start, min(piece, at + n - start), os.POSIX_FADV_WILLNEED)


class RingThread(threading.Thread):
    """A thread of a `Ring`, `at` bytes into the file; `work` is its loop. One that fails stops there,
    counted as done (nothing waits for it), and its error is raised once the caller looks."""

    def __init__(self, ring: Ring, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.ring = ring
        self.at = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.ring.started(self)
            self.work()
        except BaseException as e:
            with self.ring.moved:
                self.error, self.at = e, self.ring.size
                self.ring.moved.notify_all()

    def advance(self, n: int) -> None:
        with self.ring.moved:
            self.at += n
            self.ring.moved.notify_all()

    def wait_for(self, ready: Callable[[], bool]) -> bool:
        """Wait until `ready()`; False if the hashing was stopped meanwhile."""
        with self.ring.moved:
            self.ring.moved.wait_for(lambda: ready() or self.ring.stopped)
            return not self.ring.stopped

    def work(self) -> None:
        raise NotImplementedError


class ReadThread(RingThread):
    """Each chunk into the ring once the ring may take it (`Ring.may_read`)."""

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring, "hash-read")

    def work(self) -> None:
        ring = self.ring
        while self.at < ring.size:
            if not self.wait_for(lambda: ring.may_read(self.at)):
                return
            want = min(CHUNK, ring.size - self.at)
            view, got = ring.buffer(self.at)[:want], 0
            while got < want:  # the whole chunk: the hashes take the ring's buffers a chunk at a time
                n = os.preadv(ring.fd, [view[got:]], self.at + got)
                if n <= 0:
                    raise OSError(errno.EIO, f"the file ended at byte {self.at + got} of {ring.size} while read")
                got += n
            self.advance(want)


class AheadThread(RingThread):
    """Asks the kernel for the chunks AHEAD of the walk, so that their pages are brought in (and that work
    paid) here rather than in the walk's thread, which then reads them from memory."""

    def __init__(self, ring: Ring) -> None:
        super().__init__(ring, "hash-ahead")

    def work(self) -> None:
        t = self.ring
        piece = piece_size(t.fd)
        while self.at < t.size:
            if not self.wait_for(lambda: self.at < t.walked + AHEAD):
                return
            n = min(CHUNK, t.size - self.at)
            read_ahead(t.fd, self.at, n, piece)
            self.advance(n)


class HashThread(RingThread):
    """One hash: each chunk in the ring once it is read."""

    def __init__(self, ring: Ring, alg: str, hasher: Any) -> None:
        super().__init__(ring, f"hash-{alg}")
        self.alg, self.hasher = alg, hasher

    def work(self) -> None:
        ring, reader = self.ring, self.ring.reader
        while self.at < ring.size:
            if not self.wait_for(lambda: reader.at > self.at) or reader.error is not None:
                return
            n = min(CHUNK, ring.size - self.at)
            self.hasher.update(ring.buffer(self.at)[:n])  # hashlib and xxhash let go of the GIL on large buffers
            self.advance(n)


def file_digests(path: Path, algorithms: list[str], desc: str, on_read: Callable[[int], None],
                 followed: bool = False) -> dict[str, str]:
    """Hex digests of `path` in one read, `on_read(n)` run at each CHUNK boundary (see `follow`)."""
    hashing = Ring(path, algorithms, followed)
    try:
        hashing.follow(desc, on_read)
        return hashing.digests()
    finally:
        hashing.stop()
