"""MDS shards byte for byte as streaming's MDSWriter writes them, with fewer copies of the data.

MDSWriter joins a sample's columns into one byte string, then a shard's samples into another, then
prepends the shard header to that: three copies of every image in user space, then a fourth into
the page cache, the costliest (bench: a buffered write runs at a third of the disk's speed here).
ShardWriter keeps each sample as the byte strings it came in, gathers a shard once into a reused,
page-aligned buffer and writes that with O_DIRECT, straight to the disk; where the filesystem
refuses O_DIRECT it writes the pieces with writev. The file, index.json, the shard hashes and the
uploads (MDSWriter's own machinery) are the same; tests compare both writers byte for byte.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from typing import Any

import numpy as np
import xxhash
from streaming import MDSWriter
from streaming.base.format.mds.encodings import mds_encode

IOV_MAX = 1024  # buffers one writev takes (os.sysconf("SC_IOV_MAX") on Linux)
ALIGN = 4096  # O_DIRECT wants the buffer, the offset and the length aligned to the logical block size


def hasher(algo: str) -> Any:
    """The incremental form of streaming's `get_hash(algo, data)`: same names, same hex digest."""
    return getattr(xxhash, algo)() if algo in xxhash.algorithms_available else getattr(hashlib, algo)()


class ShardWriter(MDSWriter):
    def __init__(self, direct: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.compression:
            raise ValueError("ShardWriter writes uncompressed shards; use MDSWriter for compression")
        self.pieces: list[list[bytes]] = []  # each cached sample's byte strings, in order
        self.direct = direct  # turned off at the first refusal of O_DIRECT
        self.buffer = mmap.mmap(-1, ALIGN)  # page-aligned; grown to the largest shard, then reused

    def _reset_cache(self) -> None:
        super()._reset_cache()
        self.pieces = []

    def write(self, sample: dict[str, Any]) -> None:
        if self.event.is_set():  # an upload failed: stop as MDSWriter.write does
            self.cancel_future_jobs()
            raise Exception("One of the threads failed. Check other traceback for more details.")
        columns = zip(self.column_names, self.column_encodings, self.column_sizes, strict=True)
        data, sizes = [], []
        for key, encoding, size in columns:
            datum = mds_encode(encoding, sample[key])
            if size is None:
                sizes.append(len(datum))
            elif size != len(datum):
                raise KeyError(f"Unexpected data size; was this data typed with the correct encoding ({encoding})?")
            data.append(datum)
        pieces = [np.array(sizes, np.uint32).tobytes(), *data]
        size = sum(map(len, pieces))
        if self.size_limit and self.size_limit < self.new_shard_size + size + self.extra_bytes_per_sample:
            self.flush_shard()
            self._reset_cache()
        self.pieces.append(pieces)
        self.new_samples.append(b"")  # MDSWriter's count of cached samples; the bytes are in self.pieces
        self.new_shard_size += size + self.extra_bytes_per_sample

    def flush_shard(self) -> None:
        basename, _ = self._name_next_shard()
        sizes = [sum(map(len, p)) for p in self.pieces]
        num = np.uint32(len(sizes)).tobytes()
        offsets = np.array([0, *sizes]).cumsum().astype(np.uint32)
        offsets += len(num) + offsets.nbytes + len(self.config_data)
        buffers = [num, offsets.tobytes(), self.config_data, *(b for p in self.pieces for b in p)]
        nbytes = sum(map(len, buffers))
        path = os.path.join(self.local, basename)
        if self.direct and (data := self.write_direct(path, buffers, nbytes)):
            buffers = [data]
        else:
            write_buffered(path, buffers)
        hashes = {algo: hasher(algo) for algo in self.hashes}
        for h in hashes.values():
            for b in buffers:
                h.update(b)
        info = {"basename": basename, "bytes": nbytes, "hashes": {a: h.hexdigest() for a, h in hashes.items()}}
        self.shards.append({"samples": len(sizes), "raw_data": info, "zip_data": None, **self.get_config()})
        future = self.executor.submit(self.cloud_writer.upload_file, basename)
        future.add_done_callback(self.exception_callback)

    def write_direct(self, path: str, buffers: list[bytes], nbytes: int) -> memoryview | None:
        """Gather `buffers` into the aligned buffer and write it to `path` with O_DIRECT, padded to
        the block size, then truncated to `nbytes`; the shard's bytes, or None (and O_DIRECT off
        from now on) if the filesystem refuses O_DIRECT."""
        padded = -(-nbytes // ALIGN) * ALIGN
        if len(self.buffer) < padded:
            self.buffer.close()
            self.buffer = mmap.mmap(-1, padded)
        view = memoryview(self.buffer)
        at = 0
        for b in buffers:
            view[at : at + len(b)] = b
            at += len(b)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
            try:
                at = 0
                while at < padded:  # a short write leaves `at` unaligned: EINVAL, written again below
                    at += os.pwrite(fd, view[at:padded], at)
                os.ftruncate(fd, nbytes)
            finally:
                os.close(fd)
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise
            self.direct = False
            return None
        return view[:nbytes]


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
        n = os.writev(fd, views[i : i + IOV_MAX])
        while n and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]
