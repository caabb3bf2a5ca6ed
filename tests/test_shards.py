"""ShardWriter writes, with fewer copies and O_DIRECT, exactly the files streaming's MDSWriter writes."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from streaming import MDSWriter, StreamingDataset
from streaming.base.util import clean_stale_shared_memory

from imagenet import shards
from imagenet.shards import ShardWriter

COLUMNS = {"x": "bytes", "y": "int", "wnid": "str"}  # mds.py's, but any bytes: not decoded on read


def samples(n: int, seed: int = 0) -> list[dict]:
    """Odd sizes (never block-aligned), one sample bigger than a whole shard, and empty bytes."""
    rng = random.Random(seed)
    out = [{"x": rng.randbytes(rng.randrange(1, 30_000)), "y": rng.randrange(1000),
            "wnid": f"n{rng.randrange(10**8):08d}"} for _ in range(n)]
    out[n // 2]["x"] = rng.randbytes(300_000)
    out[n // 3]["x"] = b""
    return out


def write(writer: type[MDSWriter], out: Path, rows: list[dict], **kwargs) -> MDSWriter:
    remote = out.parent / f"{out.name}-remote"
    with writer(out=(str(out), str(remote)), columns=COLUMNS, hashes=["md5", "sha1", "xxh64"],
                size_limit=1 << 17, keep_local=True, **kwargs) as w:
        for row in rows:
            w.write(row)
    return w


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("direct", [True, False], ids=["o_direct", "writev"])
def test_shard_writer_writes_the_same_files_as_mdswriter(tmp_path: Path, direct: bool):
    rows = samples(300)
    write(MDSWriter, tmp_path / "mdswriter", rows)
    w = write(ShardWriter, tmp_path / "shardwriter", rows, direct=direct)
    assert w.direct == direct  # O_DIRECT was used (ext4/tmpfs take it), or not asked for
    expected = files(tmp_path / "mdswriter")
    assert len([k for k in expected if k.endswith(".mds")]) > 5
    assert files(tmp_path / "shardwriter") == expected  # every shard and index.json, byte for byte
    assert files(tmp_path / "shardwriter-remote") == expected  # and what was uploaded
    clean_stale_shared_memory()
    read = StreamingDataset(local=str(tmp_path / "shardwriter"), batch_size=1)
    assert [read[i] for i in range(len(read))] == rows  # and an unmodified StreamingDataset reads it back


def test_a_filesystem_refusing_o_direct_gets_the_same_files_written_plainly(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    real_open = os.open

    def refuse_direct(path, flags, *args):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", path)
        return real_open(path, flags, *args)

    rows = samples(100, seed=1)
    write(MDSWriter, tmp_path / "mdswriter", rows)
    monkeypatch.setattr(shards.os, "open", refuse_direct)
    w = write(ShardWriter, tmp_path / "shardwriter", rows)
    assert not w.direct
    assert files(tmp_path / "shardwriter") == files(tmp_path / "mdswriter")


def test_a_shard_that_cannot_be_written_stops_the_writer_and_no_index_is_written(tmp_path: Path,
                                                                                  monkeypatch: pytest.MonkeyPatch):
    real_open = os.open

    def disk_full_at_shard_1(path, flags, *args):
        if str(path).endswith("shard.00001.mds"):
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(shards.os, "open", disk_full_at_shard_1)
    with pytest.raises(BaseException) as raised:
        write(ShardWriter, tmp_path / "out", samples(100, seed=2))
    chain = [raised.value, raised.value.__context__]
    assert any(isinstance(e, OSError) and e.errno == errno.ENOSPC for e in chain), chain
    assert not (tmp_path / "out" / "index.json").exists()  # never an index naming a shard that is not there
    assert not (tmp_path / "out-remote" / "index.json").exists()
