"""verify: check a downloaded archive's size and every hash listed for it in checksums/ (MD5SUMS,
SHA256SUMS, XXH64SUMS), and index where each image's bytes are, all in one sequential read: the
hashes run side by side in threads while the tar headers are walked from the pages just read."""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..archives import read
from ..config import HASHERS, Config, Split, check_image_count, checksum_entries, read_checksums
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
QUEUED = 4  # chunks a hash may fall behind the read
LOOKAHEAD = 64 << 10  # past an image's end, the next header (and an inner tar's end padding)


def file_digests(path: Path, algorithms: list[str], desc: str, on_read: Callable[[int], None]) -> dict[str, str]:
    """Hex digests of `path` in one sequential read. Each hash runs in a thread of its own, fed the
    chunks through a short queue, so the read and `on_read(bytes read so far)`, run after each chunk,
    go on while the slowest hash works, until it falls QUEUED chunks behind."""
    hashers = {alg: HASHERS[alg]() for alg in algorithms}
    feeds = [Feed(h) for h in hashers.values()]
    threads = [threading.Thread(target=feed.run, name=f"hash-{alg}", daemon=True)
               for alg, feed in zip(hashers, feeds, strict=True)]
    for t in threads:
        t.start()
    done = 0
    try:
        with open(path, "rb", buffering=0) as f, progress(path.stat().st_size, desc) as bar:
            while chunk := f.read(CHUNK):
                for feed in feeds:
                    feed.chunks.put(chunk)
                done += len(chunk)
                on_read(done)
                bar.update(len(chunk))
    finally:
        for feed in feeds:
            feed.chunks.put(None)
        for t in threads:
            t.join()
    for feed in feeds:
        if feed.error is not None:
            raise feed.error
    return {alg: h.hexdigest() for alg, h in hashers.items()}


class Feed:
    """One hash's queue of chunks. A hash that fails keeps taking chunks (dropping them) until the
    end, so the read never blocks on a full queue, and its error is raised once the read is done."""

    def __init__(self, hasher: Any) -> None:
        self.hasher = hasher
        self.chunks: queue.Queue[bytes | None] = queue.Queue(QUEUED)
        self.error: BaseException | None = None

    def run(self) -> None:
        while (chunk := self.chunks.get()) is not None:
            if self.error is None:
                try:
                    self.hasher.update(chunk)  # hashlib and xxhash let go of the GIL on large buffers
                except BaseException as e:
                    self.error = e


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
    st, source = tar.stat(), cfg.resolve(split.source) if ":" not in split.source else None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "expected": expected, "source": split.source,
            "source_mtime_ns": source.stat().st_mtime_ns if source is not None and source.exists() else None}


def verify(ctx: Context, split: Split) -> dict:
    """Check the archive's size and hashes and index its images in one read; a damaged archive is
    repaired from its torrent and read again, at most REPAIRS times, else set aside (`mend`)."""
    expected = read_checksums(ctx.cfg, split.archive)
    for repairs in range(REPAIRS + 1):
        result = verify_once(ctx, split, expected, repaired=repairs > 0)
        if not isinstance(result, str):
            return result
        mend(ctx, split, result, repaired=repairs == REPAIRS)
    raise AssertionError("mend raises once the repairs are spent")


def verify_once(ctx: Context, split: Split, expected: dict[str, str], repaired: bool) -> dict | str:
    """One read of the archive: its outputs, or what is wrong with it (a size or hash mismatch that a
    repair may mend). `repaired`: after a repair from the torrent (then a hash that still differs is
    a wrong checksum entry)."""
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
        actual = file_digests(tar, sorted(expected), f"verify {split_name}", index_upto)
        rate = size / max(time.perf_counter() - t0, 1e-9) / 1e6
        index_upto(size + LOOKAHEAD)
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
        return f"{alg} mismatch: expected {expected[alg]}, actual {actual[alg]}"
    if problem is not None:
        raise problem
    if unreadable is not None:
        raise unreadable
    images.sort(key=lambda i: (i.wnid, i.name))
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

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        return {"download": upstream(ctx.paths, split.name, self.before), "images": split.images,
                "expected": read_checksums(ctx.cfg, split.archive), "index_format": FORMAT}

    def present(self, ctx: Context, split: Split, out: dict[str, Any]) -> str | None:
        return present(ctx.paths, out)

    def run(self, ctx: Context, split: Split) -> dict[str, Any]:
        return verify(ctx, split)


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
