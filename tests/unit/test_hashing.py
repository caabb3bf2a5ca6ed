"""verify's one-read hashing: every hash in a thread of its own, fed chunk by chunk."""

from __future__ import annotations

import hashlib
import random
import threading
from pathlib import Path

import pytest
import xxhash

from how_to_imagenet.pipeline.stages import verify
from how_to_imagenet.pipeline.stages.verify import CHUNK, file_digests


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
