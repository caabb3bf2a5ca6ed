"""ShardWriter: MDS shards and index.json byte for byte as streaming's MDSWriter writes them
(uncompressed), with fewer copies of the data and without importing streaming (or torch).

MDSWriter joins a sample's columns into one byte string, then a shard's samples into another, then
prepends the shard header: three copies of every image in user space, then a fourth into the page
cache, the costliest (bench: a buffered write runs at a third of the disk's speed here). ShardWriter
keeps each sample as the byte strings it came in, gathers a shard once into one of two reused,
page-aligned buffers and has a thread write it with O_DIRECT, straight to the disk, while the next
shard is read; where the filesystem refuses O_DIRECT it writes the pieces with writev.

Subclasses hook in where a shard or the index is written (`shard_written`, `index_written`): the
object-store upload (`upload.UploadingWriter`) is one. The layout is in README.md beside this file.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import xxhash

from .encodings import FIXED_SIZE, encode
from .index import write_index_json

IOV_MAX = 1024  # buffers one writev takes (os.sysconf("SC_IOV_MAX") on Linux)
ALIGN = 4096  # O_DIRECT wants the buffer, the offset and the length aligned to the logical block size
U32 = 4  # every count, size and offset in a shard is a little-endian uint32


def hasher(algo: str) -> Any:
    """The incremental form of streaming's `get_hash(algo, data)`: same names, same hex digest."""
    return getattr(xxhash, algo)() if algo in xxhash.algorithms_available else getattr(hashlib, algo)()


def aligned(n: int) -> int:
    """`n` rounded up to a multiple of ALIGN."""
    return -(-n // ALIGN) * ALIGN


def u32(*values: int) -> bytes:
    return b"".join(v.to_bytes(U32, "little") for v in values)


class ShardWriter:
    """Write samples (dicts of column -> value) as MDS shards into the folder `out`, then index.json.

    `columns` maps a column name to its MDS encoding; `hashes` (sorted) are recorded per shard;
    a shard holds at most `size_limit` bytes. Use as a context manager, or call `finish()`."""

    format = "mds"

    def __init__(self, out: str | Path, columns: dict[str, str], hashes: list[str] | None = None,
                 size_limit: int = 1 << 26, direct: bool = True) -> None:
        hashes = list(hashes or [])
        if hashes != sorted(set(hashes)):
            raise ValueError("hashes must be unique and in sorted order")
        self.local = Path(out)
        self.local.mkdir(parents=True, exist_ok=True)
        self.names = sorted(columns)
        self.encodings = [columns[n] for n in self.names]
        self.sizes = [FIXED_SIZE.get(e) for e in self.encodings]
        self.hashes, self.size_limit = hashes, size_limit
        self.config = {"version": 2, "format": self.format, "compression": None, "hashes": hashes,
                       "size_limit": size_limit, "column_names": self.names, "column_encodings": self.encodings,
                       "column_sizes": self.sizes}
        self.config_data = json.dumps(self.config, sort_keys=True).encode()
        self.pieces: list[list[bytes]] = []  # each cached sample's byte strings, in order
        self.shard_bytes = 2 * U32 + len(self.config_data)  # of the shard being gathered, as MDSWriter counts
        self.shards: list[dict[str, Any]] = []  # the index entries of the shards written
        self.direct = direct  # turned off at the first refusal of O_DIRECT
        # Shard k is gathered into buffers[k % 2] while shard k - 1 is written from the other one.
        self.buffers = [mmap.mmap(-1, ALIGN), mmap.mmap(-1, ALIGN)]  # page-aligned; grown as needed
        self.io = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self.writing: Future | None = None  # the write of the last shard flushed
        self.submitted = 0  # shards handed to the writer thread

    # ------------------------------------------------------------ hooks for subclasses

    def shard_written(self, basename: str) -> None:
        """Called in the writer thread once shard `basename` is on disk and hashed."""

    def index_written(self) -> None:
        """Called once index.json is written, every shard before it."""

    # ------------------------------------------------------------ writing

    def write(self, sample: dict[str, Any]) -> None:
        data, sizes = [], []
        for name, encoding, size in zip(self.names, self.encodings, self.sizes, strict=True):
            datum = encode(encoding, sample[name])
            if size is None:
                sizes.append(len(datum))
            elif size != len(datum):
                raise ValueError(f"column {name!r}: {len(datum)} bytes, but {encoding} takes {size}")
            data.append(datum)
        pieces = [u32(*sizes), *data]
        size = sum(map(len, pieces)) + U32  # and its offset in the shard header
        if self.size_limit < self.shard_bytes + size:
            self.flush_shard()
        self.pieces.append(pieces)
        self.shard_bytes += size

    def flush_shard(self) -> None:
        """Hand the cached samples to the writer thread as the next shard (as MDSWriter, even none:
        a first sample larger than `size_limit` follows an empty shard)."""
        sizes = [sum(map(len, p)) for p in self.pieces]
        start = U32 * (len(sizes) + 2) + len(self.config_data)  # after the count, offsets and config
        offsets, at = [], start
        for s in [0, *sizes]:
            at += s
            offsets.append(at)
        buffers = [u32(len(sizes)), u32(*offsets), self.config_data, *(b for p in self.pieces for b in p)]
        nbytes = offsets[-1]
        padded = self.gather(buffers, nbytes) if self.direct else None  # while the shard before is written
        # Then wait for it: one write at a time, and a shard joins the index only once written (so
        # this one's name, which counts the shards in the index, follows).
        self.wait()
        basename = f"shard.{len(self.shards):05}.{self.format}"
        shard = {"samples": len(sizes), "raw_data": {"basename": basename, "bytes": nbytes, "hashes": {}},
                 "zip_data": None, **self.config}
        self.writing = self.io.submit(self.write_shard, buffers, padded, shard)
        self.submitted += 1
        self.pieces, self.shard_bytes = [], 2 * U32 + len(self.config_data)

    def gather(self, buffers: list[bytes], nbytes: int) -> memoryview:
        """Copy `buffers` into the free aligned buffer; the bytes padded to the block size."""
        k = self.submitted % 2  # the other buffer may still be being written
        padded = aligned(nbytes)
        if len(self.buffers[k]) < padded:
            # Room for any shard up to size_limit at once: the first touch of new pages costs more than
            # the copy (a few ms per MB in a VM), and shards a little larger than the last would pay it again.
            self.buffers[k] = mmap.mmap(-1, max(padded, aligned(self.size_limit)))
        view = memoryview(self.buffers[k])[:padded]
        at = 0
        for b in buffers:
            view[at : at + len(b)] = b
            at += len(b)
        return view

    def write_shard(self, buffers: list[bytes], padded: memoryview | None, shard: dict) -> dict:
        """In the writer thread: write one shard, record its hashes, call the hook; its index entry."""
        info = shard["raw_data"]
        path, nbytes = str(self.local / info["basename"]), info["bytes"]
        if padded is not None:
            buffers = [padded[:nbytes]]
            if not self.write_direct(path, padded, nbytes):
                write_buffered(path, buffers)
        else:
            write_buffered(path, buffers)
        hashes = {algo: hasher(algo) for algo in self.hashes}
        for h in hashes.values():
            for b in buffers:
                h.update(b)
        info["hashes"] = {algo: h.hexdigest() for algo, h in hashes.items()}
        self.shard_written(info["basename"])
        return shard

    def write_direct(self, path: str, padded: memoryview, nbytes: int) -> bool:
        """Write `padded` to `path` with O_DIRECT, then truncate the file to `nbytes`; False (and
        O_DIRECT off from now on) if the filesystem refuses O_DIRECT."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
            try:
                at = 0
                while at < len(padded):  # a short write leaves `at` unaligned: EINVAL, then written plainly
                    at += written(os.pwrite(fd, padded[at:], at), path)
                os.ftruncate(fd, nbytes)
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.direct = False
            return False
        return True

    def wait(self) -> None:
        """Wait for the shard being written and add it to the index; its error, if any, is raised
        here (and the shard never joins the index)."""
        if self.writing is None:
            return
        writing, self.writing = self.writing, None
        try:
            self.shards.append(writing.result())
        except KeyboardInterrupt:
            self.writing = writing  # interrupted, the write goes on: wait again later
            raise

    def finish(self) -> None:
        """Write the last shard, then index.json: only once every shard is written and hashed."""
        try:
            if self.pieces:
                self.flush_shard()
            self.wait()
            write_index_json(self.local, self.shards)
            self.index_written()
        finally:
            self.io.shutdown(wait=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: type | None, *_: object) -> None:
        if kind is None:
            self.finish()
        else:  # an error: no index.json, which would name shards that may not be there
            self.io.shutdown(wait=True, cancel_futures=True)


def write_buffered(path: str, buffers: list[bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        write_all(fd, buffers)
    finally:
        os.close(fd)


def write_all(fd: int, buffers: list[bytes]) -> None:
    """writev until every byte is written (a write may be short), IOV_MAX buffers at a time."""
    views = [memoryview(b) for b in buffers if b]
    i = 0
    while i < len(views):
        n = written(os.writev(fd, views[i : i + IOV_MAX]), f"descriptor {fd}")
        while n and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]


def written(n: int, where: str) -> int:
    """A write's count, never 0: a write that makes no progress would otherwise be retried forever."""
    if n <= 0:
        raise OSError(errno.EIO, "a write wrote nothing", where)
    return n
