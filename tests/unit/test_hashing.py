"""verify's one-read hashing: every hash in a thread of its own, reading the file behind the fastest; which
hashes verify checks."""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import threading
from pathlib import Path

import pytest
import xxhash

from how_to_imagenet.pipeline.cli import hash_names
from how_to_imagenet.pipeline.config import asked, load_config
from how_to_imagenet.pipeline.stages import verify
from how_to_imagenet.pipeline.stages.verify import CHUNK, file_digests
from how_to_imagenet.testing.runs import PROJECT


def hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("hash-")]


@pytest.mark.parametrize("size", [0, 1, CHUNK, 3 * CHUNK + 12345])
def test_one_read_gives_the_same_digests_as_hashing_the_whole_file(tmp_path: Path, size: int):
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(size).randbytes(size))
    seen: list[int] = []
    got = file_digests(path, ["md5", "sha256", "xxh64"], "test", seen.append)
    assert got == {"md5": hashlib.md5(data).hexdigest(), "sha256": hashlib.sha256(data).hexdigest(),
                   "xxh64": xxhash.xxh64(data).hexdigest()}
    assert seen == [min(size, CHUNK * k) for k in range(1, -(-size // CHUNK) + 1)]  # after every chunk
    assert not hash_threads()


def test_short_reads_are_read_on_to_the_end_of_each_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A read that returns fewer bytes than asked (as a network file system may) is read on: every hash
    still takes whole chunks from the ring."""
    monkeypatch.setattr(verify, "CHUNK", 4096)
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(5).randbytes(3 * 4096 + 123))
    preadv = os.preadv
    monkeypatch.setattr(os, "preadv", lambda fd, buffers, at: preadv(fd, [buffers[0][:1000]], at))
    assert file_digests(path, ["sha256", "xxh64"], "test", lambda n: None) == {
        "sha256": hashlib.sha256(data).hexdigest(), "xxh64": xxhash.xxh64(data).hexdigest()}
    assert not hash_threads()


def test_an_error_in_the_read_loop_stops_every_hash_thread(tmp_path: Path):
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(3 * CHUNK))

    def fail(done: int) -> None:
        raise RuntimeError(f"bad header after {done} bytes")

    with pytest.raises(RuntimeError, match=f"bad header after {CHUNK} bytes"):
        file_digests(path, ["md5", "sha256"], "test", fail)
    assert not hash_threads()


def test_a_hash_that_fails_is_an_error_not_a_wrong_digest_or_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    class Failing:
        def __init__(self) -> None:
            self.chunks = 0

        def update(self, chunk: bytes) -> None:
            self.chunks += 1
            if self.chunks == 2:
                raise MemoryError("no room to hash")

        def hexdigest(self) -> str:
            return "0" * 32

    monkeypatch.setattr(verify, "CHUNK", 1024)
    monkeypatch.setitem(verify.HASHERS, "md5", Failing)
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(50 * 1024))  # many more chunks than a queue holds
    result: list[BaseException | dict] = []

    def run() -> None:
        try:
            result.append(file_digests(path, ["md5", "sha256"], "test", lambda n: None))
        except BaseException as e:
            result.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(20)
    assert not thread.is_alive(), "file_digests hangs when a hash fails"
    assert isinstance(result[0], MemoryError) and "no room to hash" in str(result[0])
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


def test_the_caller_follows_the_fastest_hash_and_the_slowest_finishes_behind_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(verify, "CHUNK", 1024)
    monkeypatch.setitem(verify.HASHERS, "md5", Gated)
    Gated.gate.clear()
    path = tmp_path / "archive.tar"
    path.write_bytes(data := random.Random(3).randbytes(20 * 1024 + 7))
    hashing = verify.Hashing(path, ["md5", "xxh64"])
    try:
        walked: list[int] = []
        follow = threading.Thread(target=hashing.follow, args=("test", walked.append))
        follow.start()
        follow.join(20)
        assert not follow.is_alive(), "the caller waits for the slowest hash, not the fastest"
        assert walked[-1] == len(data) and min(t.at for t in hashing.threads) == 0  # md5 has not begun
        Gated.gate.set()
        assert hashing.digests() == {"md5": hashlib.md5(data).hexdigest(), "xxh64": xxhash.xxh64(data).hexdigest()}
    finally:
        Gated.gate.set()
        hashing.stop()
    assert not hash_threads()


def test_no_hash_falls_more_than_lag_behind_the_fastest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The bytes a slow hash has yet to read stay within LAG of the read: still in the page cache."""
    monkeypatch.setattr(verify, "CHUNK", 1024)
    monkeypatch.setattr(verify, "LAG", 4 * 1024)
    monkeypatch.setitem(verify.HASHERS, "md5", Gated)
    Gated.gate.clear()
    path = tmp_path / "archive.tar"
    path.write_bytes(bytes(64 * 1024))
    hashing = verify.Hashing(path, ["md5", "xxh64"])
    try:
        follow = threading.Thread(target=hashing.follow, args=("test", lambda n: None))
        follow.start()
        follow.join(0.5)
        assert follow.is_alive() and hashing.front() <= verify.LAG + verify.CHUNK
        Gated.gate.set()
        follow.join(20)
        assert not follow.is_alive() and set(hashing.digests()) == {"md5", "xxh64"}
    finally:
        Gated.gate.set()
        hashing.stop()


def test_verify_checks_sha256_and_xxh64_unless_md5_is_asked_for():
    cfg = load_config(PROJECT / "config.yaml")
    listed = {"md5": "a" * 32, "sha256": "b" * 64, "xxh64": "c" * 16}
    assert cfg.verify_hashes == ("sha256", "xxh64")
    assert asked(listed, cfg.verify_hashes) == {"sha256": "b" * 64, "xxh64": "c" * 16}
    assert asked(listed, hash_names("HASHES")("md5,sha256 xxh64")) == listed
    assert asked({"md5": "a" * 32}, cfg.verify_hashes) == {"md5": "a" * 32}  # listed in MD5SUMS alone: still proven
    with pytest.raises(argparse.ArgumentTypeError, match="HASHES has 'crc32', not a hash verify checks"):
        hash_names("HASHES")("sha256 crc32")
