"""Faults other than kills end in one clear line and lose nothing: bad values, bad configs, a full
disk (a real small tmpfs), a read-only DATA (a real read-only bind mount), a killed download."""

from __future__ import annotations

import mmap
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.pipeline.stages.download import LOOPBACK_ARGS, SEED_ARGS
from how_to_imagenet.testing.runs import Fixture, checked, copy_data, free_port, make, mds_files, start, states
from how_to_imagenet.testing.runs import one_error as one_line
from how_to_imagenet.testing.torrent import make_torrent
from how_to_imagenet.testing.webseed import serve

ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a filesystem: needs root (CI runs as root)")


@pytest.mark.parametrize(("setting", "said"), [
    ("QUALITY=500", "QUALITY must be a whole number from 1 to 100, got '500'"),
    ("QUALITY=0", "QUALITY must be a whole number from 1 to 100, got '0'"),
    ("QUALITY=-7", "QUALITY must be a whole number from 1 to 100, got '-7'"),
    ("RESIZE=0", "RESIZE must be a whole number of at least 1, got '0'"),
    ("RESIZE=-1", "RESIZE must be a whole number of at least 1, got '-1'"),
    ("WORKERS=0", "WORKERS must be a whole number of at least 1, got '0'"),  # empty: each stage's default
    ("DECODE=yes", "DECODE must be a whole number from 0 to 1, got 'yes'"),
    ("YES=2", "YES must be a whole number from 0 to 1, got '2'"),
    ("MDS_FROM=folders", "MDS_FROM must be tar or untar, got 'folders'"),
])
def test_a_bad_value_is_one_line_before_any_work(fixture: Fixture, tmp_path: Path, setting: str, said: str):
    before = fixture.server.bytes_sent
    line = one_line(make("val", setting, f"CONFIG={fixture.config}", f"DATA={tmp_path / 'data'}", check=False))
    assert said in line, line
    assert fixture.server.bytes_sent == before and not (tmp_path / "data" / "tar").exists()  # nothing fetched


def test_make_all_and_folders_fail_on_a_bad_value_or_config(fixture: Fixture, tmp_path: Path):
    data = f"DATA={tmp_path / 'data'}"
    assert "QUALITY must be" in one_line(make("all", "QUALITY=500", f"CONFIG={fixture.config}", data, check=False))
    assert "config file not found" in one_line(make("folders", f"CONFIG={tmp_path}/nope.yaml", data, check=False))


def test_a_bad_config_is_one_line_before_any_work(fixture: Fixture, tmp_path: Path):
    data = f"DATA={tmp_path / 'data'}"
    assert "config file not found" in one_line(make("val", f"CONFIG={tmp_path}/nope.yaml", data, check=False))
    assert "cannot read the config file (Is a directory)" in one_line(make("status", f"CONFIG={tmp_path}", check=False))
    assert "'splits' names no split" in one_line(make("status", f"CONFIG={fixture.variant('none', splits={})}",
                                                      data, check=False))
    bogus = fixture.variant("bogus", **{"mds.hashes": ["bogus"]})
    assert "mds.hashes has unknown algorithm 'bogus'" in one_line(make("val", f"CONFIG={bogus}", data, check=False))
    sums = tmp_path / "no-val-sums"
    sums.mkdir()
    for f in (fixture.root / "checksums").iterdir():  # every checksum file, without val's lines
        (sums / f.name).write_text("".join(x for x in f.read_text().splitlines(True) if archive("val") not in x))
    before = fixture.server.bytes_sent
    line = one_line(make("val", f"CONFIG={fixture.variant('no-sum', checksums=str(sums))}", data, check=False))
    assert f"no checksum for {archive('val')}" in line and fixture.server.bytes_sent == before
    spaced = tmp_path / "a folder with spaces"  # a config path with spaces works
    shutil.copytree(fixture.root, spaced, ignore=shutil.ignore_patterns("config-*"))
    assert make("status", f"CONFIG={spaced / 'config.yaml'}", data).returncode == 0


def test_a_truncated_check_report_does_not_break_status(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    Paths(data).check_report("val").write_text('{"ok": tr')
    Paths(data).stamp("val", "untar").write_bytes(b"\xff\xfe not text")
    out = make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    assert "damaged: val untar: " in out and "not a readable stamp" in out


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte; the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as f:
        for block in (1 << 16, 4096, 512, 1):
            try:
                while f.write(bytes(block)):
                    pass
            except OSError:
                continue
    return filler


@ROOT
def test_a_full_disk_in_download_keeps_the_pieces_and_resumes_once_freed(fixture: Fixture, tmp_path: Path):
    with tmpfs(tmp_path / "small", "48k") as data:
        cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
        line = one_line(make("download-val", *cfg, check=False, env={"IMAGENET_FREE_BYTES": str(10**9)}))
        assert "download val: not enough disk space in " in line and "aria2c exit code 9" in line, line
        assert "the pieces downloaded are kept" in line
        subprocess.run(["mount", "-o", "remount,size=4m", str(data)], check=True)  # space freed
        make("val", *cfg)
        assert Paths(data).tar(archive("val")).read_bytes() == fixture.tar("val").read_bytes()


@ROOT
def test_a_full_disk_in_verify_untar_or_mds_is_one_line_and_leaves_nothing_half_written(
        fixture: Fixture, built: Path, tmp_path: Path):
    local = fixture.variant("local-val", **{"splits.val.source": archive("val")})  # the archive stays outside
    with tmpfs(tmp_path / "small", "2m") as data:
        cfg = (f"CONFIG={local}", f"DATA={data}")
        make("download-val", *cfg)
        filler = fill(data)
        line = one_line(make("verify-val", *cfg, check=False))
        assert line.startswith(f"error: verify: the disk holding {data}") and "is full" in line, line
        assert not list(Paths(data).index("val").parent.glob("*.partial"))
        filler.unlink()
        make("verify-val", *cfg)
        filler = fill(data)
        for stage, out in (("untar", Paths(data).untar("val")), ("mds", Paths(data).mds("val"))):
            line = one_line(make(f"{stage}-val", *cfg, check=False, env={"IMAGENET_FREE_BYTES": str(10**9)}))
            assert line.startswith(f"error: {stage}: the disk holding {data}") and "is full" in line, line
            assert "GNU tar could not extract" not in line  # the disk, not the archive
            assert not partial(out).exists() and not out.exists() and not Paths(data).stamp("val", stage).exists()
        filler.unlink()
        make("val", "untar-val", *cfg)
        assert {st for (split, _), st in states(local, data).items() if split == "val"} == {"done"}
        assert mds_files(Paths(data).mds("val")) == mds_files(Paths(built).mds("val"))


@ROOT
def test_a_read_only_data_is_one_line_and_status_still_works(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", str(data), str(ro)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], check=True)
        for goal in ("check-val", "val"):
            line = one_line(make(goal, f"CONFIG={fixture.config}", f"DATA={ro}", check=False))
            assert "is on a read-only filesystem" in line and "remount it read-write" in line, line
        assert make("status", f"CONFIG={fixture.config}", f"DATA={ro}").returncode == 0
    finally:
        subprocess.run(["umount", "-l", str(ro)], check=True)


def test_a_killed_download_keeps_its_control_file_and_resumes(fixture: Fixture, tmp_path: Path):
    server = serve(fixture.root)
    server.rate = 8000  # bytes/s: the 100 KB val tar takes seconds
    try:
        config = fixture.variant("kill", **{"splits.val.source": f"http://127.0.0.1:{server.server_port}/"
                                            + archive("val")})
        data = tmp_path / "data"
        tar = Paths(data).tar(archive("val"))
        proc = start("download-val", f"CONFIG={config}", f"DATA={data}")
        t0 = time.time()
        while server.bytes_sent < 24000 or time.time() - t0 < 2.5:
            assert proc.poll() is None and time.time() - t0 < 60
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to save anything on the way out
        proc.wait()
        control = Paths(data).control(tar)
        assert control.exists() and control.stat().st_size > 0  # saved within the last second or so
        before, server.rate = len(server.ranges), 0
        make("verify-val", f"CONFIG={config}", f"DATA={data}")
        resumed = [int(r.removeprefix("bytes=").split("-")[0]) for r in server.ranges[before:] if r]
        assert resumed and min(resumed) > 0, server.ranges  # not from the start
        assert tar.read_bytes() == fixture.tar("val").read_bytes()
    finally:
        server.shutdown()


def test_a_tree_that_lost_an_image_is_refused_by_mds_and_unpacked_again(fixture: Fixture, built: Path,
                                                                        tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = ("MDS_FROM=untar", f"CONFIG={fixture.config}", f"DATA={data}")
    lost = sorted(Paths(data).untar("val").rglob("*.JPEG"))[3]
    lost.unlink()
    Paths(data).stamp("val", "mds").unlink()
    line = one_line(make("mds-val", *cfg, check=False))
    assert f"{lost.parent.name}/{lost.name} is missing" in line and "run the same command again" in line, line
    done = make("mds-val", *cfg)
    assert "[untar val] done" in done.stderr and "[mds val] done" in done.stderr
    assert mds_files(Paths(data).mds("val")) == mds_files(Paths(built).mds("val"))


def test_unsorted_shard_hashes_in_the_config_are_taken_as_streaming_wants_them(fixture: Fixture, built: Path,
                                                                              tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("hashes", **{"mds.hashes": ["xxh64", "sha1", "xxh64"]})
    assert yaml.safe_load(config.read_text())["mds"]["hashes"] == ["xxh64", "sha1", "xxh64"]
    make("val", f"CONFIG={config}", f"DATA={data}")  # the same as [sha1, xxh64]: nothing to redo
    assert mds_files(Paths(data).mds("val")) == mds_files(Paths(built).mds("val"))


def test_a_lost_control_file_costs_no_piece_already_on_disk(fixture: Fixture, tmp_path: Path):
    server = serve(fixture.root)
    server.rate = 20000  # bytes/s per request: the 100 KB val tar takes seconds
    try:
        torrent = tmp_path / f"{archive('val')}.torrent"  # the fixture's torrent, seeded by this slow server
        torrent.write_bytes(make_torrent(fixture.tar("val"), f"http://127.0.0.1:{server.server_port}/"))
        config = fixture.variant("slow-torrent", **{"splits.val.source": str(torrent)})
        data = tmp_path / "data"
        tar = Paths(data).tar(archive("val"))
        proc = start("download-val", f"CONFIG={config}", f"DATA={data}")
        t0 = time.time()
        while server.bytes_sent < 40000:
            assert proc.poll() is None and time.time() - t0 < 60
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=30)
        Paths(data).control(tar).unlink()  # lost: aria2c alone would call the preallocated file complete
        sent, server.rate = server.bytes_sent, 0
        done = make("val", f"CONFIG={config}", f"DATA={data}")
        assert tar.read_bytes() == fixture.tar("val").read_bytes() and "[mds val] done" in done.stderr
        assert server.bytes_sent - sent < tar.stat().st_size  # the good pieces on disk were kept, not fetched again
    finally:
        server.shutdown()


def test_an_empty_control_file_left_by_a_full_disk_is_replaced_by_a_piece_check(fixture: Fixture, built: Path,
                                                                                  tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    tar = Paths(data).tar(archive("val"))
    with open(tar, "r+b") as f:  # half written, as when the disk filled: the rest is zeros
        f.seek(tar.stat().st_size // 2)
        f.write(bytes(tar.stat().st_size - tar.stat().st_size // 2))
    Paths(data).control(tar).write_bytes(b"")  # what aria2c left (before: "Failed to read from the segment file")
    shutil.rmtree(Paths(data).mds("val"))
    before = fixture.server.bytes_sent
    done = make("val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert "the control file was empty: checking the pieces on disk against the torrent" in done.stderr
    assert tar.read_bytes() == fixture.tar("val").read_bytes()
    assert fixture.server.bytes_sent - before < tar.stat().st_size  # the good half was kept


def partial_download(fixture: Fixture, data: Path, kind: str) -> tuple[str, Path]:
    """What aria2c leaves of the val archive when it stops part way ('--stop=1', its bytes and its own
    control file), from the fixture's web seed: the live source (the fixture's torrent or its URL) and the tar."""
    tar = Paths(data).tar(archive("val"))
    source = str(fixture.root / "torrents" / f"{archive('val')}.torrent") if kind == "torrent" \
        else fixture.url + archive("val")
    subprocess.run(["aria2c", *SEED_ARGS, *LOOPBACK_ARGS, "--stop=1", "--max-download-limit=40K", "-d", str(tar.parent),
                    *(["-o", tar.name] if kind == "url" else []), source], capture_output=True)
    assert tar.stat().st_size > 0 and Paths(data).control(tar).stat().st_size > 0
    return source, tar


@pytest.mark.parametrize("kind", ["torrent", "url"])
def test_a_refused_connection_keeps_the_control_file_and_ends_in_aria2cs_cause(fixture: Fixture, tmp_path: Path,
                                                                                kind: str):
    data = tmp_path / "data"
    live, tar = partial_download(fixture, data, kind)
    control = Paths(data).control(tar)
    kept = tar.read_bytes()
    nobody = f"http://127.0.0.1:{free_port()}/"  # nothing listens there
    if kind == "torrent":
        torrent = tmp_path / f"{archive('val')}.torrent"  # the same torrent (info hash), its web seed not there
        torrent.write_bytes(make_torrent(fixture.tar("val"), nobody))
        source = str(torrent)
    else:
        source = nobody + archive("val")
    # No seed to wait for: aria2c stops a second after its web seed refused.
    config = fixture.variant(f"refused-{kind}", **{"splits.val.source": source,
                                                   "aria2c_args": [*LOOPBACK_ARGS, "--bt-stop-timeout=1"]})
    failed = make("download-val", f"CONFIG={config}", f"DATA={data}", check=False)
    line = one_line(failed)
    assert line.endswith("aria2c said: errorCode=1 Failed to establish connection, cause: Connection refused"), line
    assert "run the same command again to resume" in line and failed.stderr.count("aria2c -c ") == 1
    assert "--check-integrity" not in failed.stderr and "the control file" not in failed.stderr  # nothing dropped
    assert tar.read_bytes() == kept and control.stat().st_size > 0  # kept (aria2c saves it again as it stops)
    sent, asked = fixture.server.bytes_sent, len(fixture.server.ranges)
    live_config = fixture.variant(f"live-{kind}", **{"splits.val.source": live})
    make("download-val", f"CONFIG={live_config}", f"DATA={data}")  # the source back: it resumes
    assert tar.read_bytes() == fixture.tar("val").read_bytes() and not control.exists()
    if kind == "torrent":  # the pieces kept are not fetched again
        assert fixture.server.bytes_sent - sent < tar.stat().st_size
    else:  # after its probe (a plain GET it drops after the headers), from where it stopped
        resumed = [int(r.removeprefix("bytes=").split("-")[0]) for r in fixture.server.ranges[asked:] if r]
        assert resumed and min(resumed) > 0, fixture.server.ranges[asked:]


@pytest.mark.parametrize(("kind", "damage"), [("torrent", "truncated"), ("url", "another download's")])
def test_a_control_file_aria2c_refuses_is_dropped_naming_aria2cs_reason(fixture: Fixture, tmp_path: Path, kind: str,
                                                                       damage: str):
    data = tmp_path / "data"
    live, tar = partial_download(fixture, data, kind)
    control = Paths(data).control(tar)
    if damage == "truncated":
        control.write_bytes(control.read_bytes()[:20])
    else:  # a torrent's control file: its piece length is not the URL download's
        other = partial_download(fixture, tmp_path / "other", "torrent")[1]
        control.write_bytes(Paths(tmp_path / "other").control(other).read_bytes())
    config = fixture.variant(f"refuse-{kind}", **{"splits.val.source": live})
    done = make("download-val", f"CONFIG={config}", f"DATA={data}")
    said = {"truncated": "(errorCode=1 Failed to read from the segment file ",
            "another download's": "(errorCode=10 WARNING: Detected a change in piece length."}[damage]
    assert f"[download val] the control file was refused {said}" in done.stderr, done.stderr
    assert ("checking the pieces on disk" if kind == "torrent" else "from the start") in done.stderr
    assert tar.read_bytes() == fixture.tar("val").read_bytes() and not control.exists()


KEEP = """
import sys, time
from streaming import StreamingDataset
ds = StreamingDataset(local=sys.argv[1], batch_size=1)
ds[0]
print("reading", flush=True)
time.sleep(120)
"""


def hold(path: Path) -> mmap.mmap:
    """A mapping of the whole file `path`, which keeps it live for the shared-memory cleaners."""
    with open(path, "r+b") as f:
        return mmap.mmap(f.fileno(), 0)


def test_shared_memory_of_a_killed_reader_is_cleaned_by_the_next_check(fixture: Fixture, built: Path,
                                                                        tmp_path: Path):
    from how_to_imagenet.pipeline.shm import NAME, SHM, in_use

    data = copy_data(built, tmp_path / "data")
    reader = subprocess.Popen([sys.executable, "-c", KEEP, str(Paths(data).mds("val"))], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    assert reader.stdout.readline() == "reading\n"
    # What the reader maps (not what else appeared meanwhile: other processes come and go in /dev/shm too).
    left = {m.split("/dev/shm/")[1] for m in Path(f"/proc/{reader.pid}/maps").read_text().split()
            if m.startswith("/dev/shm/")}
    assert any(NAME.fullmatch(n) for n in left), left
    # Held here until the check, so that another pytest worker's own cleaning (of what no live process
    # maps) does not take them first: once let go, they are what a killed reader leaves.
    held = [hold(SHM / n) for n in sorted(left)]
    os.killpg(reader.pid, signal.SIGKILL)  # the group, as a killed make check: its resource tracker too
    time.sleep(0.5)
    reader.wait()
    assert left <= {p.name for p in SHM.iterdir()}  # stays, so far
    for mapping in held:
        mapping.close()
    checked(fixture.config, data, "val")
    # Gone, or (the prefix freed and taken again) mapped by the check that just ran in this process.
    assert not (left & {p.name for p in SHM.iterdir()}) - in_use()
