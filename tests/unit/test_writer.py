"""ShardWriter writes, with fewer copies, O_DIRECT and no import of streaming, exactly the files
streaming's MDSWriter writes; merge_index writes streaming's merged index."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
from streaming import MDSWriter, StreamingDataset
from streaming.base.util import merge_index as streaming_merge_index

from how_to_imagenet.pipeline.mds import writer as shards
from how_to_imagenet.pipeline.mds.index import merge_index
from how_to_imagenet.pipeline.mds.upload import UploadingWriter
from how_to_imagenet.pipeline.mds.writer import ShardWriter
from how_to_imagenet.pipeline.shm import clean_orphaned_shm

COLUMNS = {"x": "bytes", "y": "int", "wnid": "str"}  # mds.py's, but any bytes: not decoded on read


def samples(n: int, seed: int = 0) -> list[dict]:
    """Odd sizes (never block-aligned), one sample bigger than a whole shard, and empty bytes."""
    rng = random.Random(seed)
    out = [{"x": rng.randbytes(rng.randrange(1, 30_000)), "y": rng.randrange(1000),
            "wnid": f"n{rng.randrange(10**8):08d}"} for _ in range(n)]
    out[n // 2]["x"] = rng.randbytes(300_000)
    out[n // 3]["x"] = b""
    return out


def write(writer: type, out: Path, rows: list[dict], remote: bool = False, **kwargs) -> MDSWriter | ShardWriter:
    """Write `rows` with MDSWriter or one of ours, into `out` (and, with `remote`, upload to `out`-remote)."""
    settings = {"columns": COLUMNS, "hashes": ["md5", "sha1", "xxh64"], "size_limit": 1 << 17, **kwargs}
    there = str(out.parent / f"{out.name}-remote")
    if writer is MDSWriter:
        w = MDSWriter(out=(str(out), there) if remote else str(out), keep_local=True, **settings)
    else:
        w = UploadingWriter(out, there, **settings) if remote else writer(out, **settings)
    with w:
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
    clean_orphaned_shm()
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


def test_the_uploading_writer_uploads_what_mdswriter_uploads(tmp_path: Path):
    rows = samples(120, seed=3)
    write(MDSWriter, tmp_path / "mdswriter", rows, remote=True)
    write(ShardWriter, tmp_path / "ours", rows, remote=True)
    assert files(tmp_path / "ours") == files(tmp_path / "mdswriter")
    assert files(tmp_path / "ours-remote") == files(tmp_path / "mdswriter-remote") == files(tmp_path / "mdswriter")


def test_a_first_sample_larger_than_a_shard_is_cut_as_mdswriter_cuts_it(tmp_path: Path):
    rows = samples(20, seed=4)
    rows[0]["x"] = bytes(300_000)  # MDSWriter writes an empty shard before it: so must we
    write(MDSWriter, tmp_path / "mdswriter", rows)
    write(ShardWriter, tmp_path / "ours", rows)
    assert files(tmp_path / "ours") == files(tmp_path / "mdswriter")


def test_merge_index_writes_what_streamings_merge_index_writes(tmp_path: Path):
    for name in ("mdswriter", "ours"):
        for k in range(3):
            write(MDSWriter, tmp_path / name / f"{k:05d}", samples(40, seed=k))
    streaming_merge_index([str(tmp_path / "mdswriter" / f"{k:05d}" / "index.json") for k in range(3)],
                          str(tmp_path / "mdswriter"), keep_local=True)
    merge_index([tmp_path / "ours" / f"{k:05d}" for k in range(3)], tmp_path / "ours")
    assert (tmp_path / "ours" / "index.json").read_bytes() == (tmp_path / "mdswriter" / "index.json").read_bytes()


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


def test_vals_real_column_is_written_as_mdswriter_writes_json(tmp_path: Path):
    rows = [{**row, "real": labels} for row, labels in zip(samples(40, seed=3), [[], [0, 758], [999]] * 14,
                                                            strict=False)]
    columns = {**COLUMNS, "real": "json"}
    write(MDSWriter, tmp_path / "mdswriter", rows, columns=columns)
    write(ShardWriter, tmp_path / "shardwriter", rows, columns=columns)
    assert files(tmp_path / "shardwriter") == files(tmp_path / "mdswriter")
    clean_orphaned_shm()
    read = StreamingDataset(local=str(tmp_path / "shardwriter"), batch_size=1)
    assert [read[i]["real"] for i in range(len(read))] == [row["real"] for row in rows]
