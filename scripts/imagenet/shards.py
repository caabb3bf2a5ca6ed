"""MDS shards byte for byte as streaming's MDSWriter writes them, with fewer copies of the data.

MDSWriter joins a sample's columns into one byte string, then a shard's samples into another, then
prepends the shard header to that: three copies of every image in user space, then a fourth into
the page cache, the costliest (bench: a buffered write runs at a third of the disk's speed here).
ShardWriter keeps each sample as the byte strings it came in, gathers a shard once into one of two
reused, page-aligned buffers and has a thread write it with O_DIRECT, straight to the disk, while
the next shard is read; where the filesystem refuses O_DIRECT it writes the pieces with writev.
The file, index.json, the shard hashes and the uploads (MDSWriter's own machinery) are the same;
tests compare both writers byte for byte.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
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
        if kwargs.get("compression"):  # before MDSWriter.__init__, which may empty the output folder
            raise ValueError("ShardWriter writes uncompressed shards; use MDSWriter for compression")
        super().__init__(**kwargs)
        self.pieces: list[list[bytes]] = []  # each cached sample's byte strings, in order
        self.direct = direct  # turned off at the first refusal of O_DIRECT
        # Shard k is gathered into buffers[k % 2] while shard k - 1 is written from the other one.
        self.buffers = [mmap.mmap(-1, ALIGN), mmap.mmap(-1, ALIGN)]  # page-aligned; grown as needed
        self.io = ThreadPoolExecutor(1, thread_name_prefix="shard-writer")
        self.writing: Future | None = None  # the write of the last shard flushed
        self.failed: BaseException | None = None  # why a shard's write failed
        self.submitted = 0  # shards handed to the writer thread

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
        sizes = [sum(map(len, p)) for p in self.pieces]
        num = np.uint32(len(sizes)).tobytes()
        offsets = np.array([0, *sizes]).cumsum().astype(np.uint32)
        offsets += len(num) + offsets.nbytes + len(self.config_data)
        buffers = [num, offsets.tobytes(), self.config_data, *(b for p in self.pieces for b in p)]
        nbytes = sum(map(len, buffers))
        padded = self.gather(buffers, nbytes) if self.direct else None  # while the shard before is written
        # Then wait for it: one write at a time, and a shard joins the index only once written (so
        # this one's name, which counts the shards in the index, follows).
        self.wait()
        basename, _ = self._name_next_shard()
        info = {"basename": basename, "bytes": nbytes, "hashes": {}}
        shard = {"samples": len(sizes), "raw_data": info, "zip_data": None, **self.get_config()}
        self.writing = self.io.submit(self.write_shard, buffers, padded, shard)
        self.submitted += 1

    def gather(self, buffers: list[bytes], nbytes: int) -> memoryview:
        """Copy `buffers` into the free aligned buffer; the bytes padded to the block size."""
        k = self.submitted % 2  # the other buffer may still be being written
        padded = -(-nbytes // ALIGN) * ALIGN
        if len(self.buffers[k]) < padded:
            self.buffers[k] = mmap.mmap(-1, padded)
        view = memoryview(self.buffers[k])[:padded]
        at = 0
        for b in buffers:
            view[at : at + len(b)] = b
            at += len(b)
        return view

    def write_shard(self, buffers: list[bytes], padded: memoryview | None, shard: dict) -> dict:
        """In the writer thread: write one shard, record its hashes, queue its upload; its index entry."""
        info = shard["raw_data"]
        path, nbytes = os.path.join(self.local, info["basename"]), info["bytes"]
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
        future = self.executor.submit(self.cloud_writer.upload_file, info["basename"])
        future.add_done_callback(self.exception_callback)
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
        here, and then no index is written: that shard's samples are gone from the cache."""
        if self.writing is None:
            return
        try:
            shard = self.writing.result()
        except BaseException as e:
            if not isinstance(e, KeyboardInterrupt):  # interrupted, the write goes on: wait again later
                self.writing, self.failed = None, e
            raise
        self.writing = None
        self.shards.append(shard)

    def _write_index(self) -> None:
        self.wait()  # every shard is written and hashed, and its upload queued, before index.json
        if self.failed is not None:
            raise RuntimeError(f"not writing index.json: a shard could not be written ({self.failed})")
        super()._write_index()

    def finish(self) -> None:
        try:
            self.wait()  # before MDSWriter.finish, which after a failed upload skips the index and may
            super().finish()  # remove the local folder: the last write's own error must not be lost
        except BaseException:
            self.cancel_future_jobs()
            raise
        finally:
            self.io.shutdown(wait=True)


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
