"""Whole-file hashes in one read of the file, each hash in a thread of its own, beside a walk of the
same bytes in the caller's thread (verify's index). The caller runs `follow(desc, on_read)`: its
`on_read(n)` is called for each CHUNK boundary n in order (and the end), and may read the bytes
before n (they are in the page cache). Two ways to share the read:

    Ring      a read thread copies the file, CHUNK by CHUNK, into a ring of LAG // CHUNK buffers
              that every hash reads; the read (and the caller behind it) runs at most LAG ahead of
              the slowest hash. The file leaves the page cache once for all the hashes: verify alone.
    Trailing  the caller's walk is the read; each hash reads the bytes it has walked past from the
              page cache, at the lowest CPU priority, at most TRAIL behind it. The walk, and the work
              that follows it, are not held to the pace of the slowest hash, which takes the CPU that
              work leaves idle: verify going on to mds (stages/one_read.py), which waits on the disk.

Either way `digests()` waits for every hash, and an error in any thread is raised in the caller's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import HASHERS
from .console import progress

CHUNK = 8 << 20
LAG = 64 << 20  # Ring: bytes the read may run ahead of the slowest hash (the ring's buffers)
TRAIL = 2 << 30  # Trailing: bytes the walk may run ahead of the slowest hash (still in the page cache)
LOWEST = 19  # the nice value of a trailing hash's thread


def read_whole(fd: int, view: memoryview, at: int, size: int) -> None:
    """Fill `view` from byte `at` of the file `fd` of `size` bytes, reading on after a short read (as a
    network file system may give); a file that ends first is an error."""
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], at + got)
        if n <= 0:
            raise OSError(errno.EIO, f"the file ended at byte {at + got} of {size} while read")
        got += n


class Hashes:
    """What both ways share: the open file, the hash threads, the condition they signal progress on."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        self.size = path.stat().st_size
        self.fd = os.open(path, os.O_RDONLY)
        self.moved = threading.Condition()
        self.stopped = False
        self.threads: list[HashingThread] = []
        self.helpers: list[HashingThread] = []  # threads beside the hashes (Ring's read)
        self.algorithms = algorithms

    def start(self, hash_thread: Callable[[str, Any], HashingThread]) -> None:
        self.threads = [hash_thread(alg, HASHERS[alg]()) for alg in self.algorithms]
        for t in [*self.helpers, *self.threads]:
            t.start()

    def front(self) -> int:
        """Bytes read so far, that the hashes may read."""
        raise NotImplementedError

    def slowest(self) -> int:
        """Bytes hashed by the slowest hash (one that failed counts as done)."""
        return min((t.at for t in self.threads), default=self.size)

    def follow(self, desc: str, on_read: Callable[[int], None]) -> None:
        """Run `on_read(n)` for each CHUNK boundary n (and the end), in order, once the bytes before n
        may be read; a progress bar with it."""
        raise NotImplementedError

    def failed(self) -> BaseException | None:
        return next((t.error for t in [*self.helpers, *self.threads] if t.error is not None), None)

    def digests(self) -> dict[str, str]:
        """Wait for every hash; their hex digests (a read or a hash that failed raises its error here)."""
        for t in [*self.helpers, *self.threads]:
            t.join()
        if (error := self.failed()) is not None:
            raise error
        return {t.alg: t.hasher.hexdigest() for t in self.threads}

    def stop(self) -> None:
        """End every thread (where they are) and close the file."""
        with self.moved:
            self.stopped = True
            self.moved.notify_all()
        for t in [*self.helpers, *self.threads]:
            t.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class HashingThread(threading.Thread):
    """A thread of `Hashes`, `at` bytes into the file; `work` is its loop. One that fails stops there,
    counted as done (nothing waits for it), and its error is raised once the caller looks."""

    def __init__(self, owner: Hashes, name: str, alg: str = "", hasher: Any = None) -> None:
        super().__init__(name=name, daemon=True)
        self.owner, self.alg, self.hasher = owner, alg, hasher
        self.at = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.work()
        except BaseException as e:
            with self.owner.moved:
                self.error, self.at = e, self.owner.size
                self.owner.moved.notify_all()

    def advance(self, n: int) -> None:
        with self.owner.moved:
            self.at += n
            self.owner.moved.notify_all()

    def wait_for(self, ready: Callable[[], bool]) -> bool:
        """Wait until `ready()`; False if the hashing was stopped meanwhile."""
        with self.owner.moved:
            self.owner.moved.wait_for(lambda: ready() or self.owner.stopped)
            return not self.owner.stopped

    def work(self) -> None:
        raise NotImplementedError


class Ring(Hashes):
    """The read thread copies each chunk into the ring once every hash is past the chunk it held there;
    each hash thread hashes the ring's chunks as they are read."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        super().__init__(path, algorithms)
        self.ring: list[bytearray] = []  # grown to LAG // CHUNK buffers as the read first needs them
        self.slots = max(2, LAG // CHUNK)
        self.reader = RingRead(self)
        self.helpers = [self.reader]
        self.start(lambda alg, hasher: RingHash(self, alg, hasher))

    def front(self) -> int:
        """(a read that failed counts as done: nothing waits for it)"""
        return self.reader.at

    def buffer(self, at: int) -> memoryview:
        """The ring's buffer for the chunk at byte `at`, made the first time the read needs it."""
        k = at // CHUNK % self.slots
        while len(self.ring) <= k:
            self.ring.append(bytearray(CHUNK))
        return memoryview(self.ring[k])

    def follow(self, desc: str, on_read: Callable[[int], None]) -> None:
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


class RingRead(HashingThread):
    def __init__(self, owner: Ring) -> None:
        super().__init__(owner, "hash-read")
        self.ring = owner

    def work(self) -> None:
        ring = self.ring
        while self.at < ring.size:
            if not self.wait_for(lambda: self.at < ring.slowest() + ring.slots * CHUNK):
                return
            want = min(CHUNK, ring.size - self.at)
            read_whole(ring.fd, ring.buffer(self.at)[:want], self.at, ring.size)  # whole: hashes take chunks
            self.advance(want)


class RingHash(HashingThread):
    def __init__(self, owner: Ring, alg: str, hasher: Any) -> None:
        super().__init__(owner, f"hash-{alg}", alg, hasher)
        self.ring = owner

    def work(self) -> None:
        ring, reader = self.ring, self.ring.reader
        while self.at < ring.size:
            if not self.wait_for(lambda: reader.at > self.at) or reader.error is not None:
                return
            n = min(CHUNK, ring.size - self.at)
            self.hasher.update(ring.buffer(self.at)[:n])  # hashlib and xxhash let go of the GIL on large buffers
            self.advance(n)


class Trailing(Hashes):
    """Each hash thread reads, into a chunk buffer of its own, the bytes the caller's walk has passed,
    at the lowest CPU priority; the walk waits only where the slowest hash is TRAIL behind it."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        super().__init__(path, algorithms)
        self.walked = 0  # bytes the caller's walk has passed: the hashes read no further
        self.start(lambda alg, hasher: TrailingHash(self, alg, hasher))

    def front(self) -> int:
        """Bytes the walk has passed."""
        return self.walked

    def follow(self, desc: str, on_read: Callable[[int], None]) -> None:
        advise(self.fd, 0, 0, "SEQUENTIAL")  # the walk reads in order: the kernel reads further ahead
        with progress(self.size, desc) as bar:
            while self.walked < self.size:
                n = min(self.size, (self.walked // CHUNK + 1) * CHUNK)
                with self.moved:
                    self.moved.wait_for(lambda at=n: self.slowest() + TRAIL >= at)
                if (error := self.failed()) is not None:
                    raise error
                advise(self.fd, n, CHUNK, "WILLNEED")  # the chunk after, on its way while this one is walked
                on_read(n)
                bar.update(n - self.walked)
                with self.moved:
                    self.walked = n
                    self.moved.notify_all()


def advise(fd: int, at: int, n: int, how: str) -> None:
    """posix_fadvise POSIX_FADV_<how>, where the system has it (a hint: nothing depends on it)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, at, n, getattr(os, f"POSIX_FADV_{how}"))


class TrailingHash(HashingThread):
    def __init__(self, owner: Trailing, alg: str, hasher: Any) -> None:
        super().__init__(owner, f"hash-{alg}", alg, hasher)
        self.trailing = owner

    def work(self) -> None:
        with contextlib.suppress(OSError):  # Linux gives each thread a nice value (elsewhere: the process's)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST)
        t = self.trailing
        buffer = memoryview(bytearray(min(CHUNK, t.size)))
        while self.at < t.size:
            if not self.wait_for(lambda: t.walked > self.at):
                return
            n = min(CHUNK, t.size - self.at)
            read_whole(t.fd, buffer[:n], self.at, t.size)
            self.hasher.update(buffer[:n])
            self.advance(n)


def file_digests(path: Path, algorithms: list[str], desc: str, on_read: Callable[[int], None],
                 way: type[Ring] | type[Trailing] = Ring) -> dict[str, str]:
    """Hex digests of `path` in one read, `on_read(n)` run at each CHUNK boundary (see `follow`)."""
    hashing = way(path, algorithms)
    try:
        hashing.follow(desc, on_read)
        return hashing.digests()
    finally:
        hashing.stop()
