"""The test sets end to end, through make with real aria2c over loopback HTTP: `make evals` writes the
six datasets, every sample's `y` and bytes as the archive's folder says, in the order of y then name,
byte-identical when written again; status shows a test set only once begun."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import time
import zipfile
from pathlib import Path

import yaml

from how_to_imagenet.labels import wnids
from how_to_imagenet.names import EVAL_SPLITS
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.testing.archives import JPEG, custom
from how_to_imagenet.testing.evals import ARCHIVES, zip_bytes
from how_to_imagenet.testing.fixture import bench_photos
from how_to_imagenet.testing.runs import (
    Fixture,
    checked,
    copy_data,
    forked,
    make,
    mds_files,
    one_error,
    read_mds,
    start,
    states,
)
from how_to_imagenet.testing.webseed import serve


def test_make_evals_writes_every_test_set_with_y_the_index_among_the_1000(evals: tuple[Fixture, dict],
                                                                          evals_built: dict):
    _, truth = evals
    data, config, before = evals_built["data"], evals_built["config"], evals_built["before"]
    assert not [line for line in before.splitlines() if line.startswith("imagenet-")]
    assert [line for line in before.splitlines() if "make evals" in line] == [
        f"(the test sets {', '.join(EVAL_SPLITS)}: make evals downloads, verifies and writes them)"]
    said = [line for line in evals_built["stdout"].splitlines() if line.startswith(("download ", "verify ", "mds "))]
    assert said == [f"{stage} {split}" for split in ("val", *EVAL_SPLITS) for stage in ("download", "verify", "mds")]
    # Sketch's source is not there: its mirror, tried next, is.
    assert (data / "tar" / ARCHIVES["imagenet-sketch"]).is_file()
    read = forked(lambda: {split: [(s["y"], s["wnid"], s["raw"]) for s in read_mds(Paths(data).mds(split))]
                           for split in EVAL_SPLITS})
    for split in EVAL_SPLITS:
        assert read[split] == [(y, wnids()[y], x) for y, _, x in truth[split]]
        held = json.loads((Paths(data).mds(split) / "classes.json").read_text())
        assert [(c["y"], c["wnid"], c["images"]) for c in held] == sorted(
            {(y, wnids()[y], sum(1 for t in truth[split] if t[0] == y)) for y, _, _ in truth[split]})
    a = json.loads((Paths(data).mds("imagenet-a") / "classes.json").read_text())
    assert [c["y"] for c in a] == [0, 6, 500, 999]  # 4 of the 1000 classes: the mask a scorer applies
    assert forked(lambda: checked(config, data, "val", *EVAL_SPLITS)).count(": OK (") == 7  # val: its column real
    after = make("status", f"CONFIG={config}", f"DATA={data}").stdout
    rows = [line.split() for line in after.splitlines() if line.startswith("imagenet-")]
    stages = ("download", "verify", "untar", "mds")
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (s, st, "done" if st != "untar" else "optional") for s in EVAL_SPLITS for st in stages}
    assert "make evals" not in after


def test_a_test_set_written_again_is_byte_identical_and_untar_gives_wnid_folders(evals: tuple[Fixture, dict],
                                                                                  tmp_path: Path):
    fixture, truth = evals
    data = tmp_path / "data"
    where = (f"CONFIG={fixture.config}", f"DATA={data}")
    split = "imagenet-v2-matched-frequency"
    make(f"mds-{split}", *where)
    first = mds_files(Paths(data).mds(split))
    make(f"clean-{split}", *where)
    assert not Paths(data).mds(split).exists()
    make(f"mds-{split}", *where)
    assert mds_files(Paths(data).mds(split)) == first
    make(f"untar-{split}", *where)
    tree = Paths(data).untar(split)
    assert sorted(p.name for p in tree.iterdir()) == sorted({wnids()[y] for y, _, _ in truth[split]})
    assert sorted((wnids()[y], name, x) for y, name, x in truth[split]) == sorted(
        (f.parent.name, f.name, f.read_bytes()) for f in tree.glob("*/*"))


def test_a_killed_download_of_a_test_set_resumes_and_gives_every_y(evals: tuple[Fixture, dict], tmp_path: Path):
    fixture, truth = evals
    server = serve(fixture.root)
    server.rate = 4000  # bytes/s: the 29 KB Sketch zip takes seconds
    try:
        name = ARCHIVES["imagenet-sketch"]
        config = fixture.variant("kill-evals", **{"splits.imagenet-sketch.source":
                                                  f"http://127.0.0.1:{server.server_port}/{name}"})
        data = tmp_path / "data"
        proc = start("download-imagenet-sketch", f"CONFIG={config}", f"DATA={data}")
        t0 = time.time()
        while server.bytes_sent < 22000:  # aria2c's control file then holds a block (16 KiB) done
            assert proc.poll() is None and time.time() - t0 < 60
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # no chance to save anything on the way out
        proc.wait()
        tar = Paths(data).tar(name)
        assert Paths(data).control(tar).exists() and not Paths(data).stamp("imagenet-sketch", "download").exists()
        before, server.rate = len(server.ranges), 0
        make("mds-imagenet-sketch", f"CONFIG={config}", f"DATA={data}")
        resumed = [int(r.removeprefix("bytes=").split("-")[0]) for r in server.ranges[before:] if r]
        assert resumed and min(resumed) > 0, server.ranges  # not from the start
        assert tar.read_bytes() == (fixture.root / name).read_bytes()
        samples = read_mds(Paths(data).mds("imagenet-sketch"))
        assert [(s["y"], s["raw"]) for s in samples] == [(y, x) for y, _, x in truth["imagenet-sketch"]]
    finally:
        server.shutdown()


def test_sigkill_in_the_middle_of_a_test_sets_mds_then_a_rerun_gives_identical_shards(tmp_path: Path):
    """A Sketch zip of 400 photos of about 110 KB, stored (a JPEG does not deflate), in 1 MiB shards: mds
    runs long enough to be killed after its first shard."""
    pool = bench_photos(random.Random(5), 8)
    files = [(f"sketch/{wnids()[c]}/sketch_{k}.JPEG", pool[(c + k) % len(pool)]) for c in range(0, 1000, 25)
             for k in range(10)]
    config = custom(tmp_path / "src", "imagenet-sketch", zip_bytes(files, deflate=False), len(files))
    raw = yaml.safe_load(config.read_text())
    raw["mds"]["size_limit"] = 1 << 20
    config.write_text(yaml.safe_dump(raw))
    data, cfg = tmp_path / "data", f"CONFIG={config}"
    make("verify-imagenet-sketch", cfg, f"DATA={data}")
    reference = copy_data(data, tmp_path / "reference")
    make("mds-imagenet-sketch", "WORKERS=1", cfg, f"DATA={reference}")
    building = partial(Paths(data).mds("imagenet-sketch"))
    proc = start("mds-imagenet-sketch", "WORKERS=1", cfg, f"DATA={data}")
    deadline = time.time() + 120
    while not any(building.glob("*/*.mds")):
        assert proc.poll() is None and time.time() < deadline, "mds finished before its first shard was seen"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert states(config, data, "imagenet-sketch")[("imagenet-sketch", "mds")] == "partial"
    make("mds-imagenet-sketch", "WORKERS=1", cfg, f"DATA={data}")
    assert mds_files(Paths(data).mds("imagenet-sketch")) == mds_files(Paths(reference).mds("imagenet-sketch"))
    assert [s["y"] for s in read_mds(Paths(data).mds("imagenet-sketch"))] == [c for c in range(0, 1000, 25)
                                                                               for _ in range(10)]


def test_a_hostile_zip_ends_make_in_one_line_and_writes_nothing(tmp_path: Path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"sketch/{wnids()[0]}/sketch_1.JPEG", JPEG)
        link = zipfile.ZipInfo(f"sketch/{wnids()[0]}/sketch_2.JPEG")
        link.create_system, link.external_attr = 3, 0o120777 << 16  # a symlink
        z.writestr(link, "/etc/passwd")
    config = custom(tmp_path / "src", "imagenet-sketch", buf.getvalue(), 2)
    data = tmp_path / "data"
    line = one_error(make("mds-imagenet-sketch", f"CONFIG={config}", f"DATA={data}", check=False))
    assert line == (f"error: {data / 'tar' / 'ILSVRC2012_img_imagenet-sketch.tar'}: member "
                    f"'sketch/{wnids()[0]}/sketch_2.JPEG' is a symlink, not a regular file")
    assert not (data / "index").exists() and not (data / "mds").exists()


def test_status_and_check_take_up_a_test_set_only_once_begun(evals_built: dict, tmp_path: Path):
    from how_to_imagenet.pipeline.config import load_config
    from how_to_imagenet.pipeline.context import Context
    from how_to_imagenet.pipeline.stage import shown

    cfg = load_config(evals_built["config"])
    fresh, made = Context(cfg, Paths(tmp_path / "empty")), Context(cfg, Paths(evals_built["data"]))
    assert [s.name for s in cfg.splits.values() if shown(fresh, s)] == ["train", "val"]
    assert [s.name for s in cfg.splits.values() if shown(made, s)] == ["train", "val", *EVAL_SPLITS]
