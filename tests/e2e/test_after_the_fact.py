"""Trust the data, not the stamps: what happens to a finished pipeline afterwards (bit rot in the
archive, a tampered index, DATA moved, the archive deleted, a shard, index.json or stamp lost) is
found, said in one line naming the file, and mended by the command that line gives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.index import read_index
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing import runs
from how_to_imagenet.testing.runs import ENV, PROJECT, Fixture, checked, copy_data, make, one_error, read_mds, states


def test_bit_rot_in_a_verified_archive_is_refused_naming_the_image_and_mended(fixture: Fixture, built: Path,
                                                                              tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    tar = Paths(data).tar(archive("val"))
    row = read_index(Paths(data).index("val"))[5]
    st = tar.stat()
    with open(tar, "r+b") as f:  # one byte inside an image; bit rot keeps the mtime
        f.seek(row.offset + row.size // 2)
        byte = f.read(1)
        f.seek(row.offset + row.size // 2)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))
    make("clean-val", *cfg)
    line = one_error(make("val", *cfg, check=False))
    assert f"member {row.name} is not the image verify read" in line, line
    assert "run the same command again to repair it from the torrent" in line
    assert not Paths(data).mds("val").exists() and not Paths(data).stamp("val", "verify").exists()
    before = fixture.server.bytes_sent
    done = make("val", *cfg)  # the advised command: verify finds the bad piece and fetches only that
    assert "checking its pieces against" in done.stderr and "[mds val] done" in done.stderr
    assert fixture.server.bytes_sent - before == 1 << 15 and not Paths(data).aside(tar).exists()
    assert tar.read_bytes() == fixture.tar("val").read_bytes()
    checked(fixture.config, data, "val")


def test_a_tampered_index_fails_check_naming_the_sample_and_make_val_mends_it(fixture: Fixture, built: Path,
                                                                             tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    index = Paths(data).index("val")
    lines = index.read_text().splitlines()
    first, last = lines[1].split("\t"), lines[-1].split("\t")  # two rows of different classes
    first[0], last[0] = last[0], first[0]
    lines[1], lines[-1] = "\t".join(first), "\t".join(last)
    index.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as failed:  # check trusts the ground truth, not the index
        checked(fixture.config, data, "val")
    line = str(failed.value)
    assert f"sample 0 ({first[1]}): {index} says {first[0]}, the ground truth says {last[0]}" in line, line
    assert "run 'make val' to redo what is wrong" in line
    assert states(fixture.config, data)[("val", "verify")] == "damaged"  # the index is not what verify wrote
    done = make("val", *cfg)  # verify writes the index again, mds the shards
    assert "[verify val] done" in done.stderr and "[mds val] done" in done.stderr
    assert index.read_text() == Paths(built).index("val").read_text()
    checked(fixture.config, data, "val")


def test_data_moved_elsewhere_stays_done(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    moved = tmp_path / "elsewhere" / "imagenet"
    moved.parent.mkdir()
    data.rename(moved)
    cfg = (f"CONFIG={fixture.config}", f"DATA={moved}")
    assert set(states(fixture.config, moved).values()) == {"done"}
    done = make("val", *cfg)
    assert "[mds val] up to date" in done.stderr and "done in" not in done.stderr
    checked(fixture.config, moved, "val")
    assert str(data) not in "".join(p.read_text() for p in Paths(moved).stamps.iterdir())  # no stamp names it


def test_the_archive_deleted_after_mds_is_not_needed_until_a_stage_needs_it(fixture: Fixture, built: Path,
                                                                            tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    tar = Paths(data).tar(archive("val"))
    tar.unlink()
    status = make("status", *cfg).stdout
    assert states(fixture.config, data)[("val", "download")] == "removed"
    assert states(fixture.config, data)[("val", "mds")] == "done"
    assert f"val: {tar.name} was removed after verify" in status and "next: make" not in status
    done = make("val", *cfg)  # stays done: nothing downloaded
    assert "aria2c" not in done.stderr and "[mds val] up to date" in done.stderr
    assert ": OK" in checked(fixture.config, data, "val", decode=True)  # check reads no archive
    assert not tar.exists()
    shutil.rmtree(Paths(data).untar("val"))  # the ImageFolder tree needs the archive again
    line = one_error(make("untar-val", *cfg, check=False))
    assert f"{tar} is gone (removed after it was verified); run 'make download-val' to fetch it again" in line
    done = make("download-val", *cfg)  # the advised command really downloads
    assert "aria2c -c" in done.stderr and tar.read_bytes() == fixture.tar("val").read_bytes()
    make("untar-val", *cfg)
    assert sum(1 for p in Paths(data).untar("val").rglob("*.JPEG")) == 24


def test_a_lost_shard_index_or_stamp_is_damaged_and_make_val_redoes_just_that(fixture: Fixture, built: Path,
                                                                            tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    shard = sorted(Paths(data).mds("val").glob("*/*.mds"))[-1]
    losses = [(lambda: shard.unlink(), "mds", str(shard)),
              (lambda: (Paths(data).mds("val") / "index.json").unlink(), "mds", "index.json"),
              (lambda: Paths(data).stamp("val", "mds").write_text("{"), "mds", "not a readable stamp"),
              (lambda: Paths(data).stamp("val", "verify").write_text("{}"), "verify", "not a readable stamp")]
    for lose, stage, named in losses:
        lose()
        assert states(fixture.config, data)[("val", stage)] == "damaged"
        status = make("status", *cfg).stdout
        assert f"damaged: val {stage}: " in status and named in status and f"'make {stage}-val'" in status
        done = make("val", *cfg)
        assert f"[{stage} val] done" in done.stderr
        assert set(states(fixture.config, data).values()) == {"done"}
    assert [s["raw"] for s in read_mds(Paths(data).mds("val"))] == [s["raw"] for s in read_mds(Paths(built).mds("val"))]
    checked(fixture.config, data, "val")


def test_check_holds_the_lock_shared_so_clean_waits_for_it(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    hold = ("import sys, time; from pathlib import Path; from how_to_imagenet.pipeline.lock import lock_data; "
            "lock_data(Path(sys.argv[1]), shared=True); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(Paths(data).lock)], stdout=subprocess.PIPE, text=True,
                              env={**ENV, "PYTHONPATH": str(PROJECT / "src")})
    try:
        assert holder.stdout.readline() == "held\n"
        # Another reader goes on at once; clean (a writer) waits, naming the reader.
        env = {**ENV, "PYTHONPATH": str(PROJECT / "src")}
        reader = subprocess.run([sys.executable, "-c", hold.replace("time.sleep(60)", "pass"), str(Paths(data).lock)],
                                capture_output=True, text=True, timeout=30, env=env)
        assert reader.stdout == "held\n" and "waiting" not in reader.stderr
        clean = subprocess.Popen(["make", "--no-print-directory", f"VENV={runs.VENV}", "clean-val",
                                  f"CONFIG={fixture.config}", f"DATA={data}"], cwd=PROJECT, env=ENV,
                                 stderr=subprocess.PIPE, text=True)
        line = clean.stderr.readline()
        assert line.startswith(f"waiting: {Paths(data).lock} is held by pid {holder.pid}"), line
        assert Paths(data).mds("val").exists()
        holder.kill()
        assert clean.wait(timeout=30) == 0 and not Paths(data).mds("val").exists()
    finally:
        holder.kill()


def test_stamps_of_an_older_version_are_stale_and_redone_not_a_traceback(fixture: Fixture, built: Path,
                                                                         tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    stamp = Paths(data).stamp("val", "verify")
    old = json.loads(stamp.read_text())
    for key in ("index_xxh3", "mtime_ns"):  # what verify recorded before this version
        del old["outputs"][key]
    del old["inputs"]["index_format"]
    stamp.write_text(json.dumps(old))
    assert states(fixture.config, data)[("val", "verify")] == "stale"
    done = make("val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert "[verify val] done" in done.stderr and "Traceback" not in done.stderr
    assert {st for (split, _), st in states(fixture.config, data).items() if split == "val"} == {"done"}

