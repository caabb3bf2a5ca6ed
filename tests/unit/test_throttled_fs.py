"""make bench's read-limited disk (tools/throttled_fs.py): a folder shown read-only through FUSE, every byte as
in the folder, and never read faster than its rate. Needs root and /dev/fuse (CI has both)."""

from __future__ import annotations

import errno
import importlib.util
import os
import random
import time
from pathlib import Path
from types import ModuleType

import pytest

from how_to_imagenet.testing.runs import PROJECT


def tool(name: str) -> ModuleType:
    """A module of tools/ loaded from its file (it imports nothing of tools/), leaving sys.path as it is."""
    spec = importlib.util.spec_from_file_location(name, PROJECT / "tools" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


throttled_fs = tool("throttled_fs")

pytestmark = pytest.mark.skipif(throttled_fs.usable() is not None, reason=str(throttled_fs.usable()))
MB_S = 20.0


def test_the_mount_shows_the_folder_read_only_byte_for_byte_and_no_faster_than_its_rate(tmp_path: Path):
    source = tmp_path / "source"
    (source / "checksums").mkdir(parents=True)
    data = random.Random(1).randbytes(3 << 20)
    (source / "archive.tar").write_bytes(data)
    (source / "checksums" / "SHA256SUMS").write_text("x  archive.tar\n")
    with throttled_fs.mounted(source, tmp_path / "mount", MB_S) as mount:
        assert sorted(os.listdir(mount)) == ["archive.tar", "checksums"]
        assert (mount / "checksums" / "SHA256SUMS").read_text() == "x  archive.tar\n"
        st, shown = (source / "archive.tar").stat(), (mount / "archive.tar").stat()
        assert (shown.st_size, shown.st_mtime_ns) == (st.st_size, st.st_mtime_ns)
        t0 = time.monotonic()
        with open(mount / "archive.tar", "rb") as f:
            got = f.read()
        seconds = time.monotonic() - t0
        assert got == data
        # Every request but the first (the kernel's read-ahead: at most 1 MB) waits its turn at the rate; a busy
        # machine only makes it slower.
        assert seconds >= (len(data) - (1 << 20)) / (MB_S * 1e6)
        with pytest.raises(OSError) as refused:
            (mount / "archive.tar").write_bytes(b"no")
        assert refused.value.errno == errno.EROFS
        assert not (mount / "missing").exists()
    assert not os.path.ismount(tmp_path / "mount")  # unmounted on leaving
