"""Whole-file hashes in one read of the file, beside a walk of the same bytes in the caller's thread
(verify's index). A read thread copies the file, CHUNK by CHUNK, into a ring of chunk buffers, and
each hash, in a thread of its own, hashes those same buffers: the file leaves the page cache once for
all the hashes, and a buffer is read into again only once every hash is past it. The caller runs
`follow(desc, on_read)`: its `on_read(n)` is called for each CHUNK boundary n in order, and at the
end of the file (none for an empty file), and may read the bytes before n. Two pacings:

    Ring      the read leads: `on_read(n)` once the read has passed n (the caller walks pages just
              read); the read runs at most LAG ahead of the slowest hash (the ring holds LAG). verify
              alone.
    Trailing  the caller's walk leads: `on_read(n)` at once, the read (of pages the walk has just
              read) follows it through a ring of two chunks, and the read and the hashes run at a
              low CPU priority (Linux); the walk waits only where they are TRAIL behind it, and a
              thread asks the kernel for the pages AHEAD of it. The walk, and the work after it, are
              not held to the pace of the slowest hash, which takes the CPU that work leaves idle:
              verify going on to mds (stages/one_read.py), which waits on the disk.

Either way `digests()` waits for every hash, and an error in any thread is raised in the caller's.
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
LAG = 64 << 20  # bytes the read may run ahead of the slowest hash: the ring's buffers
TRAIL = 2 << 30  # Trailing: bytes the walk may run ahead of the slowest hash (still in the page cache)
AHEAD = 4 * CHUNK  # Trailing: bytes the kernel is asked to read ahead of the walk
PIECE = 128 << 10  # a read-ahead request the kernel honours whole (its default read-ahead; it caps larger ones)
LOW = 10  # the nice value of Trailing's threads: the walk comes first, and they still move on a busy machine


class Ring:
    """The ring, its read thread and a thread per hash; the read leads (see the module's docstring)."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        self.size = path.stat().st_size
        self.moved = threading.Condition()
        self.stopped = False
        self.ring: list[bytearray] = []  # grown to `slots` buffers as the read first needs them
        self.slots = self.ring_slots()
        self.reader = ReadThread(self)
        self.threads = [HashThread(self, alg, HASHERS[alg]()) for alg in algorithms]
        self.fd = os.open(path, os.O_RDONLY)
        try:
            for t in self.every_thread():
                t.start()
        except BaseException:
            self.stop()  # the threads started so far, and the file
            raise

    def ring_slots(self) -> int:
        """Chunks the ring holds: LAG's worth, which the read may run ahead of the slowest hash."""
        return max(2, LAG // CHUNK)

    def front(self) -> int:
        """Bytes read (a read that failed counts as done: nothing waits for it)."""
        return self.reader.at

    def slowest(self) -> int:
        """Bytes hashed by the slowest hash (one that failed counts as done)."""
        return min((t.at for t in self.threads), default=self.size)

    def may_read(self, at: int) -> bool:
        """Whether the read may go on to the chunk at byte `at` (the ring has room for it)."""
        return at < self.slowest() + self.slots * CHUNK

    def buffer(self, at: int) -> memoryview:
        """The ring's buffer for the chunk at byte `at`, made the first time the read needs it."""
        k = at // CHUNK % self.slots
        while len(self.ring) <= k:
            self.ring.append(bytearray(CHUNK))
        return memoryview(self.ring[k])

    def every_thread(self) -> list[RingThread]:
        return [self.reader, *self.threads]

    def started(self, thread: RingThread) -> None:
        """Run first in each of the ring's threads."""

    def follow(self, desc: str, on_read: Callable[[int], None]) -> None:
        """Run `on_read(n)` for each CHUNK boundary n the read has passed (and the end), in order, until
        the whole file is read; a progress bar with it."""
        seen = 0
        with progress(self.size, desc) as bar:
            while seen < self.size:
                with self.moved:
                    self.moved.wait_for(lambda at=seen: self.front() > at or self.failed() is not None)
                    front = self.front()
                if (error := self.failed()) is not None:
                    raise error
                while seen < front:
                    step = min(self.size, (seen // CHUNK + 1) * CHUNK) - seen
                    seen += step
                    on_read(seen)
                    bar.update(step)

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


class Trailing(Ring):
    """The same ring, read behind the caller's walk at a low CPU priority (see the module's docstring)."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        self.walked = 0  # bytes the caller's walk has passed: the read goes no further
        self.ahead = AheadThread(self)
        super().__init__(path, algorithms)

    def ring_slots(self) -> int:
        """Two: the read here holds no one back (and each buffer costs its first touch)."""
        return 2

    def may_read(self, at: int) -> bool:
        return at < self.walked and super().may_read(at)

    def every_thread(self) -> list[RingThread]:
        return [self.ahead, *super().every_thread()]

    def started(self, thread: RingThread) -> None:
        if thread is not self.ahead and sys.platform == "linux":  # where each thread has a nice value of its own
            with contextlib.suppress(OSError):  # (the read-ahead stays: the walk waits on what it asks for)
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOW)

    def follow(self, desc: str, on_read: Callable[[int], None]) -> None:
        """Run `on_read(n)` for each CHUNK boundary n (and the end), in order, waiting only where the
        slowest hash is TRAIL behind n (or behind the walk, whichever is nearer); a progress bar with it."""
        with progress(self.size, desc) as bar:
            while self.walked < self.size:
                n = min(self.size, (self.walked // CHUNK + 1) * CHUNK)
                with self.moved:
                    self.moved.wait_for(lambda at=n: self.slowest() >= min(at - TRAIL, self.walked)
                                        or self.failed() is not None)
                if (error := self.failed()) is not None:
                    raise error
                on_read(n)
                bar.update(n - self.walked)
                with self.moved:
                    self.walked = n
                    self.moved.notify_all()


def read_ahead(fd: int, at: int, n: int) -> None:
    """Ask the kernel to bring bytes [at, at + n) of the file into the page cache, PIECE by PIECE, where
    the system has posix_fadvise (a hint: nothing depends on it, and a refusal is ignored)."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            for piece in range(at, at + n, PIECE):
                os.posix_fadvise(fd, piece, min(PIECE, at + n - piece), os.POSIX_FADV_WILLNEED)


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
    """Trailing's: asks the kernel for the chunks AHEAD of the walk, so that its pages are brought in (and
    that work paid) here rather than in the walk's thread, which then reads them from memory."""

    def __init__(self, ring: Trailing) -> None:
        super().__init__(ring, "hash-ahead")
        self.trailing = ring

    def work(self) -> None:
        t = self.trailing
        while self.at < t.size:
            if not self.wait_for(lambda: self.at < t.walked + AHEAD):
                return
            n = min(CHUNK, t.size - self.at)
            read_ahead(t.fd, self.at, n)
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
                 way: type[Ring] = Ring) -> dict[str, str]:
    """Hex digests of `path` in one read, `on_read(n)` run at each CHUNK boundary (see `follow`)."""
    hashing = way(path, algorithms)
    try:
        hashing.follow(desc, on_read)
        return hashing.digests()
    finally:
        hashing.stop()
