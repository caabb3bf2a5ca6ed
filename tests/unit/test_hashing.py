"""verify's one-read hashing (pipeline/hashing.py): every hash in a thread of its own, sharing one read of the
file in a ring behind the caller's walk, alone or followed (by mds); which hashes verify checks."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import xxhash

from how_to_imagenet.pipeline import hashing
from how_to_imagenet.pipeline.cli import hash_names
from how_to_imagenet.pipeline.config import asked, load_config
from how_to_imagenet.pipeline.hashing import CHUNK, PIECE, Ring, file_digests
from how_to_imagenet.testing.runs import PROJECT


def hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hash-")]


PACES = pytest.mark.parametrize("followed", [False, True])


def outcome(fn: Callable[[], object]) -> object:
    """What `fn()` returns or raises, run in a thread that must end within 20 s (no hang)."""
    result: list[object] = []

    def run() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "file_digests hangs"
    return result[0]


@PACES
@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK + 12345])
def test_one_read_gives_the_same_digests_as_hashing_the_whole_file(tmp_path: Path, size: int, followed: bool):
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(size).randbytes(size))
    seen: list[int] = []
    got = file_digests(path, ["md5", "sha256", "xxh64"], "test", seen.append, followed)
    assert got == {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
                   "xxh64": xxhash.xxh64(data).hexdigest()}
    assert seen == [min(size, CHUNK * k) for k in range(1, -(-size // CHUNK) + 1)]  # after every chunk
    assert not hash_threads()


@PACES
def test_short_reads_are_read_on_to_the_end_of_each_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          followed: bool):
    """A read that returns fewer bytes than asked (as a network file system may) is read on: every hash
    still takes whole chunks from the ring."""
    monkeypatch.setattr(hashing, "CHUNK", 4096)
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(5).randbytes(3 * 4096 + 123))
    preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, at: preadv(fd, [buffers[0][:1000]], at))
    assert file_digests(path, ["sha256", "xxh64"], "test", lambda n: None, followed) == {
        "sha256": hashlib.sha256(data).hexdigest(), "xxh64": xxhash.xxh64(data).hexdigest()}
    assert not hash_threads()


@PACES
def test_an_error_in_the_read_loop_stops_every_hash_thread(tmp_path: Path, followed: bool):
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(3 * CHUNK))

    def fail(done: int) -> None:
        raise RuntimeError(f"bad header after {done} bytes")

    with pytest.raises(RuntimeError, match=f"bad header after {CHUNK} bytes"):
        file_digests(path, ["md5", "sha256"], "test", fail, followed)
    assert not hash_threads()


@PACES
def test_a_read_that_fails_is_an_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, followed: bool):
    """The read fails at its third chunk, where the caller would wait for the hashes it holds back."""
    monkeypatch.setattr(hashing, "CHUNK", 1024)
    monkeypatch.setattr(hashing, "LAG", 2 * 1024)
    monkeypatch.setattr(hashing, "TRAIL", 2 * 1024)
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(50 * 1024))
    preadv = os.preadv

    def failing(fd: int, buffers: list, at: int) -> int:
        if at >= 2 * 1024:
            raise OSError(5, "Input/output error")
        return preadv(fd, buffers, at)

    monkeypatch.setattr(os, "preadv", failing)
    error = outcome(lambda: file_digests(path, ["md5", "sha256"], "test", lambda n: None, followed))
    assert isinstance(error, OSError) and "Input/output error" in str(error)
    assert not hash_threads()


@PACES
def test_a_hash_that_fails_is_an_error_not_a_wrong_digest_or_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   followed: bool):
    class Failing:
        def __init__(self) -> None:
            self.chunks = 0

        def update(self, chunk: bytes) -> None:
            self.chunks += 1
            if self.chunks == 2:
                raise MemoryError("no room to hash")

        def hexdigest(self) -> str:
            return "0" * 32

    monkeypatch.setattr(hashing, "CHUNK", 1024)
    monkeypatch.setitem(hashing.HASHERS, "md5", Failing)
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(50 * 1024))  # many more chunks than a queue holds
    error = outcome(lambda: file_digests(path, ["md5", "sha256"], "test", lambda n: None, followed))
    assert isinstance(error, MemoryError) and "no room to hash" in str(error)
    assert not hash_threads()


class Gated:
    """A hash that waits at every update until the test opens its gate."""

    gate = threading.Event()

    def __init__(self) -> None:
        self.h = hashlib.md5()

    def update(self, chunk: bytes) -> None:
        Gated.gate.wait()
        self.h.update(chunk)

    def hexdigest(self) -> str:
        return self.h.hexdigest()


@PACES
def test_the_caller_is_not_held_to_the_slowest_hash_which_finishes_behind_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, followed: bool):
    """Within LAG (TRAIL), the caller runs ahead of a slow hash; no hash reads bytes the read has not passed
    (a trailing hash: bytes the caller's walk has not passed)."""
    monkeypatch.setattr(hashing, "CHUNK", 1024)
    monkeypatch.setitem(hashing.HASHERS, "md5", Gated)
    Gated.gate.clear()
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(3).randbytes(20 * 1024 + 7))
    hashes = Ring(path, ["md5", "xxh64"], followed)
    try:
        walked: list[tuple[int, int, int]] = []  # (the caller's n, the furthest hash, then the read's front)
        follow = threading.Thread(target=hashes.follow, args=(
            "test", lambda n: walked.append((n, max(t.at for t in hashes.threads), hashes.reader.at))))
        follow.start()
        follow.join(20)
        assert not follow.is_alive(), "the caller waits for the slowest hash, not the fastest"
        assert [n for n, _, _ in walked] == [min(len(data), 1024 * k) for k in range(1, 22)]
        assert all(hashed <= front <= n - 1024 for n, hashed, front in walked)  # the walk has passed the chunk
        assert min(t.at for t in hashes.threads) == 0  # md5 has not begun
        Gated.gate.set()
        assert hashes.digests() == {"md5": hashlib.md5(data).hexdigest(), "xxh64": xxhash.xxh64(data).hexdigest()}
    finally:
        Gated.gate.set()
        hashes.stop()
    assert not hash_threads()


LIMITS = pytest.mark.parametrize(("followed", "limit"), [(False, "LAG"), (True, "TRAIL")])


@LIMITS
def test_no_hash_falls_further_behind_the_walk_than_its_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              followed: bool, limit: str):
    """The bytes a slow hash has yet to read stay within LAG of the walk (followed: TRAIL): still in the ring
    (the page cache)."""
    monkeypatch.setattr(hashing, "CHUNK", 1024)
    monkeypatch.setattr(hashing, limit, 4 * 1024)
    monkeypatch.setitem(hashing.HASHERS, "md5", Gated)
    Gated.gate.clear()
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(64 * 1024))
    hashes = Ring(path, ["md5", "xxh64"], followed)
    try:
        follow = threading.Thread(target=hashes.follow, args=("test", lambda n: None))
        follow.start()
        with hashes.moved:  # it gets as far as the limit (a busy machine may take its time) ...
            assert hashes.moved.wait_for(lambda: hashes.walked >= 4 * 1024, timeout=20)
        follow.join(0.2)  # ... and stays within a chunk of it
        assert follow.is_alive() and hashes.walked <= 4 * 1024 + hashing.CHUNK
        Gated.gate.set()
        follow.join(20)
        assert not follow.is_alive() and set(hashes.digests()) == {"md5", "xxh64"}
    finally:
        Gated.gate.set()
        hashes.stop()


@LIMITS
def test_the_walk_ends_with_a_trail_shorter_than_a_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         followed: bool, limit: str):
    """The read never passes the walk: a walk that waited for hashes a whole trail behind it would wait forever
    once the trail is under a chunk."""
    monkeypatch.setattr(hashing, "CHUNK", 1024)
    monkeypatch.setattr(hashing, limit, 100)
    path = tmp_path / "archive.tar"
    path.write_bytes(data := bytes(5 * 1024 + 1))
    got = outcome(lambda: file_digests(path, ["sha256"], "test", lambda n: None, followed))
    assert got == {"sha256": hashlib.sha256(data).hexdigest()}


@PACES
def test_followed_hashes_run_at_a_low_cpu_priority_alone_at_the_callers(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         followed: bool):
    nice: list[int] = []

    class Noting(Gated):
        def update(self, chunk: bytes) -> None:
            nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            self.h.update(chunk)

    monkeypatch.setitem(hashing.HASHERS, "md5", Noting)
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(1000))
    got = file_digests(path, ["md5"], "test", lambda n: None, followed)
    assert got == {"md5": hashlib.md5(bytes(1000)).hexdigest()}
    callers = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # a new thread starts at its creator's
    assert nice == [min(hashing.NICEST, callers + hashing.LOW) if followed else callers]


@PACES
def test_the_kernel_is_asked_for_each_chunk_once_and_never_more_than_ahead_of_the_walk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, followed: bool):
    monkeypatch.setattr(hashing, "CHUNK", 1024)
    monkeypatch.setattr(hashing, "AHEAD", 3 * 1024)
    asked: list[tuple[int, int]] = []  # (the chunk asked for, where the walk was)
    rings: list[Ring] = []
    read_ahead = hashing.read_ahead

    def noting(fd: int, at: int, n: int, piece: int) -> None:
        asked.append((at, rings[0].walked))
        read_ahead(fd, at, n, piece)

    monkeypatch.setattr(hashing, "read_ahead", noting)
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(6).randbytes(20 * 1024 + 7))

    class Noted(Ring):
        def __init__(self, path: Path, algorithms: list[str], followed: bool) -> None:
            rings.append(self)
            super().__init__(path, algorithms, followed)

    monkeypatch.setattr(hashing, "Ring", Noted)
    assert file_digests(path, ["sha256"], "test", lambda n: None, followed) == {
        "sha256": hashlib.sha256(data).hexdigest()}
    assert [at for at, _ in asked] == list(range(0, len(data), 1024))
    assert all(at < walked + 3 * 1024 for at, walked in asked)


@pytest.mark.parametrize(("layout", "piece"), [
    ("disk", 8 << 20),  # a whole disk: its queue's read-ahead
    ("partition", 8 << 20),  # a partition: its disk's
    ("bdi", 1 << 20),  # no block device (a network filesystem): its bdi's
    ("small", PIECE),  # a read-ahead below PIECE: PIECE
    ("garbage", PIECE),  # unreadable, or no /sys at all: PIECE
    ("none", PIECE),
])
def test_a_read_ahead_piece_is_the_devices_read_ahead(tmp_path: Path, layout: str, piece: int):
    """The kernel honours a request up to the device's read-ahead: asked in pieces of that size (a piece per
    interpreter lock taken), or of PIECE where /sys does not say."""
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(100))
    st, sysfs = path.stat(), tmp_path / "sys"
    device = sysfs / "dev" / "block" / f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    disk = sysfs / "devices" / "vda"  # as the kernel lays it out: /sys/dev/block/M:m links into /sys/devices
    (disk / "queue").mkdir(parents=True)
    (disk / "queue" / "read_ahead_kb").write_text({"small": "16", "garbage": "eight\n"}.get(layout, "8192\n"))
    (disk / "vda1").mkdir()
    (disk / "vda1" / "partition").write_text("1\n")
    device.parent.mkdir(parents=True)
    if layout in ("disk", "small", "garbage"):
        device.symlink_to(disk)
    elif layout == "partition":
        device.symlink_to(disk / "vda1")
    elif layout == "bdi":
        (bdi := sysfs / "class" / "bdi" / device.name).mkdir(parents=True)
        (bdi / "read_ahead_kb").write_text("1024\n")
    with open(path, "rb") as f:
        assert hashing.piece_size(f.fileno(), sysfs) == piece


def test_read_ahead_asks_for_every_byte_once_in_pieces(monkeypatch: pytest.MonkeyPatch):
    asked: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, at, n, advice: asked.append((at, n)))
    hashing.read_ahead(3, 1000, 10_000, 4096)
    assert asked == [(1000, 4096), (5096, 4096), (9192, 1808)]


def test_verify_checks_sha256_and_xxh64_unless_md5_is_asked_for():
    cfg = load_config(PROJECT / "config.yaml")
    listed = {"md5": "a" * 32, "sha256": "b" * 64, "xxh64": "c" * 16}
    assert cfg.verify_hashes == ("sha256", "xxh64")
    assert asked(listed, cfg.verify_hashes) == {"sha256": "b" * 64, "xxh64": "c" * 16}
    assert asked(listed, hash_names("HASHES")("md5,sha256 xxh64")) == listed
    assert asked({"md5": "a" * 32}, cfg.verify_hashes) == {"md5": "a" * 32}  # listed in MD5SUMS alone: still proven
    with pytest.raises(argparse.ArgumentTypeError, match="HASHES has 'crc32', not a hash verify checks"):
        hash_names("HASHES")("sha256 crc32")
