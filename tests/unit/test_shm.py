"""Shared memory left by a killed reader is cleaned; what a live one (a training job) maps or holds open is kept."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from how_to_imagenet.pipeline.shm import PREFIX_TRIES, clean_orphaned_shm, set_up

MAP = """
import mmap, sys
f = open(sys.argv[1], "r+b")
m = mmap.mmap(f.fileno(), 4)
print("mapped", flush=True)
sys.stdin.read()
"""
# A job making its shared memory: the file is open (shm_open) and not yet mapped.
OPEN = """
import sys
f = open(sys.argv[1], "r+b")
print("open", flush=True)
sys.stdin.read()
"""


def test_only_shared_memory_no_live_process_maps_is_unlinked(tmp_path: Path):
    shm, locks = tmp_path / "shm", tmp_path / "tmp"  # its own: another pytest worker's cleaning never looks there
    shm.mkdir()
    locks.mkdir()
    orphan, live = shm / "999998_locals", shm / "999997_locals"
    other = shm / "999997_barrier"  # the same prefix as a live one: kept with it
    stale, held = locks / "999998_barrier_filelock", locks / "999997_cache_filelock"  # streaming's file locks
    for p in (orphan, live, other, stale, held):
        p.write_bytes(bytes(4))
    user = subprocess.Popen([sys.executable, "-c", MAP, str(live)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert user.stdout.readline() == "mapped\n"
        removed = clean_orphaned_shm(shm, locks)
        assert orphan.name in removed and not orphan.exists()
        assert live.exists() and other.exists()
        assert stale.name in removed and not stale.exists() and held.exists()  # a lock goes with its prefix
    finally:
        user.kill()
        user.wait()
        for p in (orphan, live, other, stale, held):
            Path(p).unlink(missing_ok=True)


def test_nothing_is_unlinked_when_a_process_maps_cannot_be_read(tmp_path: Path, monkeypatch):
    """Out of open files, a live process's maps cannot be read: what it maps is unknown, so nothing goes."""
    shm, locks = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    locks.mkdir()
    (shm / "999996_locals").write_bytes(bytes(4))
    real = Path.read_text

    def out_of_files(self: Path, *args, **kwargs) -> str:
        if self.name == "maps":
            raise OSError(24, "Too many open files")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", out_of_files)
    assert clean_orphaned_shm(shm, locks) == []
    assert (shm / "999996_locals").exists()


def test_a_file_a_live_process_holds_open_but_has_not_mapped_yet_is_kept(tmp_path: Path):
    shm, locks = tmp_path / "shm", tmp_path / "tmp"
    shm.mkdir()
    locks.mkdir()
    starting = shm / "999995_locals"
    starting.write_bytes(bytes(4))
    user = subprocess.Popen([sys.executable, "-c", OPEN, str(starting)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert user.stdout.readline() == "open\n"
        assert clean_orphaned_shm(shm, locks) == [] and starting.exists()
    finally:
        user.kill()
        user.wait()
    assert clean_orphaned_shm(shm, locks) == [starting.name] and not starting.exists()  # once let go: orphaned


@pytest.mark.parametrize(("ranks", "fails", "calls", "made"), [
    ("1", 2, 3, True),  # alone: made again until it is made
    ("1", PREFIX_TRIES, PREFIX_TRIES, False),  # alone: the last try's error
    ("2", 1, 1, False),  # one of a job's ranks: never alone again, its error at once
])
def test_a_set_up_is_made_again_only_in_a_process_that_sets_up_alone(monkeypatch: pytest.MonkeyPatch, ranks: str,
                                                                      fails: int, calls: int, made: bool):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", ranks)
    tries = []

    def make() -> str:
        tries.append(1)
        if len(tries) <= fails:
            raise FileExistsError(17, "File exists", "/000000_locals")
        return "dataset"

    if made:
        assert set_up(make) == "dataset"
    else:
        with pytest.raises(FileExistsError):
            set_up(make)
    assert len(tries) == calls
