"""verify: check a downloaded archive's size and the hashes asked for (sha256 and xxh64 unless
verify.hashes or HASHES says otherwise) among those listed for it in checksums/ (MD5SUMS,
SHA256SUMS, XXH64SUMS), and index where each image's bytes are, all in one sequential read: the
walk of the tar headers and images reads the archive, and the hashes, side by side in threads, take
the pages it has just read (`hashing`). With --then-mds (make's goal is the shards), mds follows in
the same read (`one_read`)."""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from ..archives import read
from ..config import Config, Split, asked, check_image_count, checksum_entries, read_checksums
from ..console import UserError, human_bytes, log
from ..context import Context
from ..files import read_json, write_json
from ..hashing import Ring
from ..index import FORMAT, Image, content_hash, index_images, write_index
from ..layout import Paths
from ..mds.images import header
from ..stage import Stage, forget
from ..stamps import upstream
from . import download
from .download import needed_archive

DISAGREEMENT = "disagreement"  # the report of a torrent and checksum files that describe different archives
REPAIRS = 1  # repairs from the torrent a verify run tries before it gives up
LOOKAHEAD = 64 << 10  # past an image's end, the next header (and an inner tar's end padding)


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
            """Walk the headers in the bytes before `pos`: this walk is the archive's sequential read (the
            hashes' ring reads its pages after it)."""
            nonlocal end, problem, unreadable
            try:
                while end + LOOKAHEAD <= pos and problem is None:
                    image = next(members, None)
                    if image is None:
                        end = size + LOOKAHEAD
                        continue
                    end = image.offset + image.size
                    # The archive's read: its bytes, for the per-image proof (the hashes read them after).
                    data = read(f.fileno(), image, str(tar))
                    try:
                        header(data, f"{tar}: {image.wnid}/{image.name}")  # one member rule, for mds and untar
                    except UserError as e:
                        unreadable = unreadable or e
                    images.append(image.hashed(content_hash(data)))
            except UserError as e:
                problem = e

        t0 = time.perf_counter()
        following = 0.0  # of the time, the follower's (not counted in verify's rate)
        # Going on to mds: the walk need not wait for the slowest hash, which takes what CPU mds leaves.
        hashing = Ring(tar, sorted(expected), followed=follower is not None)
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
