"""verify: check a downloaded archive's size and the hashes asked for (sha256 and xxh64 unless
verify.hashes or HASHES says otherwise) among those listed for it in checksums/ (MD5SUMS,
SHA256SUMS, XXH64SUMS), and index where each image's bytes are, all in one sequential read: the
hashes run side by side in threads while the tar headers are walked in the pages just read. With
--then-mds (make's goal is the shards), mds follows in the same read (`one_read`)."""

from __future__ import annotations

import errno
import functools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from ..archives import read
from ..config import HASHERS, Config, Split, asked, check_image_count, checksum_entries, read_checksums
from ..console import UserError, human_bytes, log, progress
from ..context import Context
from ..files import read_json, write_json
from ..index import FORMAT, Image, content_hash, index_images, write_index
from ..layout import Paths
from ..mds.images import header
from ..stage import Stage, forget
from ..stamps import upstream
from . import download
from .download import needed_archive

CHUNK = 8 << 20
DISAGREEMENT = "disagreement"  # the report of a torrent and checksum files that describe different archives
REPAIRS = 1  # repairs from the torrent a verify run tries before it gives up
LAG = 64 << 20  # bytes the read may run ahead of the slowest hash: the ring of chunk buffers they share
LOOKAHEAD = 64 << 10  # past an image's end, the next header (and an inner tar's end padding)


def file_digests(path: Path, algorithms: list[str], desc: str, on_read: Callable[[int], None]) -> dict[str, str]:
    """Hex digests of `path` in one sequential read, `on_read(bytes read so far)` run after each chunk
    (see `Hashing`)."""
    hashing = Hashing(path, algorithms)
    try:
        hashing.follow(desc, on_read)
        return hashing.digests()
    finally:
        hashing.stop()


class Hashing:
    """Whole-file hashes in one read: a reader thread copies the file, CHUNK by CHUNK, into a ring of
    LAG // CHUNK buffers, and each hash, in a thread of its own, hashes those same buffers (the file is
    copied out of the page cache once, not once per hash). The read runs at most LAG ahead of the slowest
    hash (a buffer is read into again only once every hash is past it). The caller's thread follows the
    read (`follow`), so whatever it does with the bytes just read costs the disk nothing, and once it
    has seen the whole file it may go on to other work while the slower hashes finish (`digests` waits
    for them)."""

    def __init__(self, path: Path, algorithms: list[str]) -> None:
        self.size = path.stat().st_size
        self.fd = os.open(path, os.O_RDONLY)
        self.moved = threading.Condition()
        self.stopped = False
        self.ring: list[bytearray] = []  # grown to LAG // CHUNK buffers as the read first needs them
        self.slots = max(2, LAG // CHUNK)
        self.reader = ReadThread(self)
        self.threads = [HashThread(self, alg, HASHERS[alg]()) for alg in algorithms]
        for t in [self.reader, *self.threads]:
            t.start()

    def front(self) -> int:
        """Bytes read (a read that failed counts as done: nothing waits for it)."""
        return self.reader.at

    def slowest(self) -> int:
        """Bytes hashed by the slowest hash (one that failed counts as done)."""
        return min((t.at for t in self.threads), default=self.size)

    def buffer(self, at: int) -> memoryview:
        """The ring's buffer for the chunk at byte `at`, made the first time the read needs it."""
        k = at // CHUNK % self.slots
        while len(self.ring) <= k:
            self.ring.append(bytearray(CHUNK))
        return memoryview(self.ring[k])

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
        return next((t.error for t in [self.reader, *self.threads] if t.error is not None), None)

    def digests(self) -> dict[str, str]:
        """Wait for every hash; their hex digests (a read or a hash that failed raises its error here)."""
        for t in [self.reader, *self.threads]:
            t.join()
        if (error := self.failed()) is not None:
            raise error
        return {t.alg: t.hasher.hexdigest() for t in self.threads}

    def stop(self) -> None:
        """End every thread (where they are) and close the file."""
        with self.moved:
            self.stopped = True
            self.moved.notify_all()
        for t in [self.reader, *self.threads]:
            t.join()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RingThread(threading.Thread):
    """A thread of `Hashing`, `at` bytes into the file; `work` is its loop. One that fails stops there,
    counted as done (nothing waits for it), and its error is raised once the caller looks."""

    def __init__(self, owner: Hashing, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.owner = owner
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

    def work(self) -> None:
        raise NotImplementedError


class ReadThread(RingThread):
    """The read of `Hashing`: each chunk into the ring once every hash is past the chunk it held."""

    def __init__(self, owner: Hashing) -> None:
        super().__init__(owner, "hash-read")

    def work(self) -> None:
        owner = self.owner
        while self.at < owner.size:
            with owner.moved:
                owner.moved.wait_for(lambda: self.at < owner.slowest() + owner.slots * CHUNK or owner.stopped)
                if owner.stopped:
                    return
            want = min(CHUNK, owner.size - self.at)
            view, got = owner.buffer(self.at)[:want], 0
            while got < want:  # the whole chunk: the hashes take the ring's buffers a chunk at a time
                n = os.preadv(owner.fd, [view[got:]], self.at + got)
                if n <= 0:
                    raise OSError(errno.EIO, f"the file ended at byte {self.at + got} of {owner.size} while read")
                got += n
            self.advance(want)


class HashThread(RingThread):
    """One hash of `Hashing`: hashes each chunk in the ring once it is read."""

    def __init__(self, owner: Hashing, alg: str, hasher: Any) -> None:
        super().__init__(owner, f"hash-{alg}")
        self.alg, self.hasher = alg, hasher

    def work(self) -> None:
        owner, reader = self.owner, self.owner.reader
        while self.at < owner.size:
            with owner.moved:
                owner.moved.wait_for(lambda: reader.at > self.at or owner.stopped)
                if owner.stopped or reader.error is not None:
                    return
            n = min(CHUNK, owner.size - self.at)
            self.hasher.update(owner.buffer(self.at)[:n])  # hashlib and xxhash let go of the GIL on large buffers
            self.advance(n)


def set_aside(ctx: Context, split: Split, tar: Path) -> Path:
    """Keep a damaged archive under another name (never delete 150 GB silently) and forget its
    download (and so every stage after it), so the next run fetches or accepts a good copy. One copy
    is kept, the latest: a disk never fills with them."""
    aside = ctx.paths.aside(tar)
    if aside.exists() or aside.is_symlink():
        aside.unlink()
    tar.rename(aside)
    forget(ctx, split, "download")
    return aside


def mend(ctx: Context, split: Split, problem: str, repaired: bool) -> None:
    """A damaged archive: from a torrent (or magnet), check its pieces against the torrent's SHA-1s
    and fetch only the bad or missing ones (then the caller verifies again); else, or once repaired
    already, set it aside (or, for the user's own file, leave it) and raise the line saying so."""
    paths = ctx.paths
    tar = paths.tar(split.archive)
    kind, src = download.source_kind(ctx, split)
    if kind in ("torrent", "magnet") and not repaired:
        torrent = Path(src).name if kind == "torrent" else "the magnet"
        log(f"[verify {split.name}] {tar.name}: {problem}; checking its pieces against {torrent} and fetching only "
            "the bad ones")
        download.aria2c(ctx, split, kind, src, repair=True)
        download.record(paths, split, kind)  # the archive changed: its download stamp says so
        return
    if kind == "file":  # a link to the user's own copy: moving the link aside would mend nothing
        raise UserError(f"{tar}: {problem}; it is a link to {src}: put a good copy there, then run the same "
                        "command again")
    aside = set_aside(ctx, split, tar)
    raise UserError(f"{tar}: {problem}; moved aside to {aside.name}; run 'make download-{split.name}' to fetch it "
                    f"again or put a good copy at {tar}")


def verdict_of(cfg: Config, split: Split, tar: Path, expected: dict[str, str]) -> dict[str, Any]:
    """What a verdict on an archive against its checksums and torrent holds for: the archive as it is
    (size, mtime), the checksums, the source and, for a .torrent, when that file last changed."""
    st, source = tar.stat(), split.local() if ":" not in split.source else None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "expected": expected, "source": split.source,
            "source_mtime_ns": source.stat().st_mtime_ns if source is not None and source.exists() else None}


class Follower(Protocol):
    """Work that follows verify's read (mds, in `one_read`): started on the images indexed once the
    whole archive is read, while the slower hashes finish; discarded if the archive fails them."""

    def start(self, images: list[Image]) -> None: ...

    def discard(self) -> None: ...


def hashes_asked(ctx: Context, split: Split) -> dict[str, str]:
    """The expected digests this run checks: HASHES, else the config's verify.hashes, among those the
    checksum files list (`config.asked`)."""
    return asked(read_checksums(ctx.cfg, split.archive), ctx.options.hashes or ctx.cfg.verify_hashes)


def verify(ctx: Context, split: Split, follower: Follower | None = None) -> dict:
    """Check the archive's size and hashes and index its images in one read; a damaged archive is
    repaired from its torrent and read again, at most REPAIRS times, else set aside (`mend`).
    `follower` is started on the first read's images (see `verify_once`)."""
    expected = hashes_asked(ctx, split)
    for repairs in range(REPAIRS + 1):
        once = functools.partial(verify_once, follower=follower) if follower and not repairs else verify_once
        result = once(ctx, split, expected, repaired=repairs > 0)
        if not isinstance(result, str):
            return result
        mend(ctx, split, result, repaired=repairs == REPAIRS)
    raise AssertionError("mend raises once the repairs are spent")


def verify_once(ctx: Context, split: Split, expected: dict[str, str], repaired: bool,
                follower: Follower | None = None) -> dict | str:
    """One read of the archive: its outputs, or what is wrong with it (a size or hash mismatch that a
    repair may mend). `repaired`: after a repair from the torrent (then a hash that still differs is
    a wrong checksum entry). `follower`: started on the images (ImageFolder order) once every one is
    indexed and proven an image, before the slower hashes are done; discarded unless they pass (and
    on any error), so nothing it makes outlives a failed verify."""
    try:
        return check_once(ctx, split, expected, repaired, follower)
    except BaseException:
        if follower is not None:
            follower.discard()
        raise


def check_once(ctx: Context, split: Split, expected: dict[str, str], repaired: bool,
               follower: Follower | None) -> dict | str:
    cfg, paths, split_name = ctx.cfg, ctx.paths, split.name
    tar = needed_archive(paths, split)
    size = tar.stat().st_size
    said = read_json(paths.report(split_name, DISAGREEMENT))
    if isinstance(said, dict) and isinstance(said.get("line"), str) and {
            k: v for k, v in said.items() if k != "line"} == verdict_of(cfg, split, tar, expected):
        raise UserError(said["line"])  # the same archive, checksums and torrent: the same verdict, with no read
    if size != split.bytes:
        return f"wrong size: expected {split.bytes} bytes, actual {size}"
    images: list[Image] = []
    problem: UserError | None = None  # reported after the hashes: a damaged tar is first a mismatch
    unreadable: UserError | None = None  # the first member that is not an image: after the walk's own problems
    with open(tar, "rb") as f:
        members = index_images(split.reader, f.fileno(), size, str(tar), split.images,
                               f"splits.{split_name}.images in {cfg.path}")
        end = 0  # where the last image indexed ends; the next header is just after it

        def index_upto(pos: int) -> None:
            """Walk the headers in bytes already read, never ahead: a read past the sequential
            read would cost the disk a seek."""
            nonlocal end, problem, unreadable
            try:
                while end + LOOKAHEAD <= pos and problem is None:
                    image = next(members, None)
                    if image is None:
                        end = size + LOOKAHEAD
                        continue
                    end = image.offset + image.size
                    # Its bytes were just read: the page cache gives them back for the per-image proof.
                    data = read(f.fileno(), image, str(tar))
                    try:
                        header(data, f"{tar}: {image.wnid}/{image.name}")  # one member rule, for mds and untar
                    except UserError as e:
                        unreadable = unreadable or e
                    images.append(replace(image, xxh3=content_hash(data)))
            except UserError as e:
                problem = e

        t0 = time.perf_counter()
        following = 0.0  # of the time, the follower's (not counted in verify's rate)
        hashing = Hashing(tar, sorted(expected))
        try:
            hashing.follow(f"verify {split_name}", index_upto)
            index_upto(size + LOOKAHEAD)
            images.sort(key=lambda i: (i.wnid, i.name))
            if follower is not None and problem is None and unreadable is None and len(images) == split.images:
                t1 = time.perf_counter()
                follower.start(images)  # while the slower hashes finish
                following = time.perf_counter() - t1
            actual = hashing.digests()
        finally:
            hashing.stop()
        rate = size / max(time.perf_counter() - t0 - following, 1e-9) / 1e6
    if wrong := [alg for alg in sorted(expected) if actual[alg] != expected[alg]]:
        entries = checksum_entries(cfg, split.archive)
        alg, where = wrong[0], entries[wrong[0]][1]
        right = [a for a in sorted(expected) if a not in wrong]
        if right:  # the checksum files disagree with each other: no download or repair can settle that
            raise UserError(f"{tar}: {alg} is {actual[alg]}, but {where} says {expected[alg]}, while "
                            f"{' and '.join(right)} match ({', '.join(entries[a][1] for a in right)}): the checksum "
                            f"files disagree about this archive, probably a wrong checksum entry; fix {where} (the "
                            "archive is kept, nothing is downloaded again or set aside)")
        if repaired:  # every piece matches the torrent, not the checksum files: one of them is wrong
            line = (f"{tar} matches every piece of its torrent, but its {alg} is {actual[alg]} where {where} says "
                    f"{expected[alg]}: the torrent and the checksum files describe different archives; find out "
                    "which one is right (the archive is kept, nothing is downloaded again)")
            # Remembered, so the next run says it again without reading the archive twice more.
            write_json(paths.report(split_name, DISAGREEMENT), {**verdict_of(cfg, split, tar, expected), "line": line})
            raise UserError(line)
        if follower is not None:
            follower.discard()
        return f"{alg} mismatch: expected {expected[alg]}, actual {actual[alg]}"
    if problem is not None:
        raise problem
    if unreadable is not None:
        raise unreadable
    check_image_count(cfg, split, tar, len(images), proven=True)
    index = paths.index(split_name)
    index.parent.mkdir(parents=True, exist_ok=True)
    write_index(index, images)
    log(f"[verify {split_name}] {tar.name}: {human_bytes(size)} at {rate:.0f} MB/s, {', '.join(sorted(actual))} OK, "
        f"{len(images)} images indexed")
    st = tar.stat()
    return {"path": paths.rel(tar), "bytes": size, "mtime_ns": st.st_mtime_ns, "bytes_read": size,
            "images": len(images), "index": paths.rel(index), "index_bytes": os.path.getsize(index),
            "index_xxh3": content_hash(index.read_bytes()), **actual}


def proof(out: dict[str, Any]) -> dict[str, Any]:
    """What the stages after verify run on: the images it indexed and the index it wrote, not where
    or when the archive was read nor which checksum files listed it."""
    return {key: out.get(key) for key in ("bytes", "images", "index_xxh3")}  # (a stamp of an older version: stale)


class Verify(Stage):
    name, before = "verify", "download"
    options = ("hashes", "then_mds", "source", "workers", "resize", "quality", "remote")  # then mds's

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        return {"download": upstream(ctx.paths, split.name, self.before), "images": split.images,
                "expected": read_checksums(ctx.cfg, split.archive), "index_format": FORMAT}

    def present(self, ctx: Context, split: Split, out: dict[str, Any]) -> str | None:
        return present(ctx.paths, out)

    def force(self, ctx: Context, split: Split) -> bool:
        """Verify again when asked for a hash the last verify did not check (HASHES=md5 after the default)."""
        out = (self.stamp(ctx, split) or {}).get("outputs")
        return isinstance(out, dict) and not set(hashes_asked(ctx, split)) <= set(out)

    def run(self, ctx: Context, split: Split) -> dict[str, Any]:
        return verify(ctx, split)

    def bring_up_to_date(self, ctx: Context, split: Split, work: Callable[[], dict[str, Any]] | None = None) -> None:
        if ctx.options.then_mds and work is None:
            from .one_read import verify_then_mds

            return verify_then_mds(ctx, split)
        return super().bring_up_to_date(ctx, split, work)


def present(paths: Paths, out: dict[str, Any]) -> str | None:
    """The index is there as verify wrote it, and the archive is the one verified (same size and
    mtime): a cheap guard against a file changed since. An archive removed on purpose leaves the
    index standing for it."""
    index, tar = paths.at(out["index"]), paths.at(out["path"])
    if not index.exists():
        return f"{index} is missing"
    if "index_xxh3" in out and content_hash(index.read_bytes()) != out["index_xxh3"]:
        return f"{index} changed since verify wrote it"
    if not tar.exists():
        return None
    st = tar.stat()
    if st.st_size != out["bytes"] or st.st_mtime_ns != out.get("mtime_ns", st.st_mtime_ns):
        return f"{tar} changed since it was verified"
    return None
