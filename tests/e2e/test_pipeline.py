"""The whole pipeline on the fixture, through make, with real aria2c, GNU tar and mosaicml-streaming."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

from PIL import Image

from how_to_imagenet.labels import val_labels, wnids
from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.cli import READERS
from how_to_imagenet.pipeline.index import read_index
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.mds.plan import permutation
from how_to_imagenet.testing.fixture import QUIRKS, TRAIN_PER_CLASS, VAL_PER_CLASS, WNIDS
from how_to_imagenet.testing.runs import Fixture, copy_data, make, mds_files, read_mds


def stamp(data: Path, split: str, stage: str) -> dict:
    return json.loads((Paths(data).stamp(split, stage)).read_text())


def test_val_mds_is_imagefolder_order_with_source_bytes_and_ground_truth_labels(fixture: Fixture, built: Path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(Paths(built).untar("val")))
    samples = read_mds(Paths(built).mds("val"))
    sources = fixture.members("val")
    assert len(samples) == len(folder) == len(sources) == VAL_PER_CLASS * len(WNIDS)
    for s, (path, _) in zip(samples, folder.samples, strict=True):
        name = Path(path).name
        truth = val_labels()[int(name[15:23]) - 1]
        assert Path(path).parent.name == truth  # untar sorted it by the ground truth
        assert_stored_as_source(s, name, sources[name])
        assert (s["wnid"], s["y"]) == (truth, wnids().index(truth))
        assert isinstance(s["x"], Image.Image) and s["x"].size == Image.open(path).size


def assert_stored_as_source(sample: dict, name: str, source: bytes) -> None:
    """An RGB JPEG is stored byte for byte; a quirk (CMYK, grayscale, PNG) as an RGB JPEG of it."""
    if name not in QUIRKS:
        assert sample["raw"] == source
        return
    assert sample["raw"] != source and sample["x"].format == "JPEG"
    assert sample["x"].mode == "RGB" and sample["x"].size == Image.open(io.BytesIO(source)).size


def test_y_is_the_index_among_all_1000_sorted_wnids_not_among_the_classes_present(built: Path):
    samples = read_mds(Paths(built).mds("val"))
    assert {s["wnid"]: s["y"] for s in samples} == {
        "n01440764": 0, "n01443537": 1, "n01739381": 59, "n02012849": 134, "n02105855": 230, "n03126707": 517,
        "n13133613": 998, "n15075141": 999}


def test_train_mds_is_the_seeded_permutation_of_imagefolder_order(fixture: Fixture, built: Path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(Paths(built).untar("train")))
    samples = read_mds(Paths(built).mds("train"))
    sources = fixture.members("train")
    assert len(samples) == len(folder) == len(sources) == TRAIN_PER_CLASS * len(WNIDS)
    order = permutation(len(folder), seed=0)
    assert order != sorted(order)
    for s, i in zip(samples, order, strict=True):
        path = Path(folder.samples[i][0])
        assert_stored_as_source(s, path.name, sources[path.name])
        assert s["wnid"] == path.parent.name == path.name.split("_")[0]
        assert s["y"] == wnids().index(s["wnid"])
    plain = sorted(b for n, b in sources.items() if n not in QUIRKS)
    assert sorted(s["raw"] for s in samples if s["raw"] in set(plain)) == plain  # each source image exactly once


def test_train_untar_is_an_imagefolder_tree_with_no_inner_tar_left(built: Path):
    root = Paths(built).untar("train")
    assert sorted(os.listdir(root)) == list(WNIDS)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == TRAIN_PER_CLASS * len(WNIDS)
    assert all(p.suffix == ".JPEG" and p.name.startswith(p.parent.name + "_") for p in files)


def test_stamps_record_what_each_stage_produced(fixture: Fixture, built: Path):
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        tar = Paths(built).tar(archive(split))
        assert stamp(built, split, "download")["outputs"]["bytes"] == tar.stat().st_size
        sums = (fixture.root / "checksums" / "SHA256SUMS").read_text()
        assert f"{stamp(built, split, 'verify')['outputs']['sha256']}  {tar.name}" in sums
        untar = stamp(built, split, "untar")["outputs"]
        assert untar["per_class"] == {w: per_class for w in WNIDS}
        mds = stamp(built, split, "mds")["outputs"]
        n = per_class * len(WNIDS)
        assert untar["images"] == mds["images"] == stamp(built, split, "verify")["outputs"]["images"] == n
        assert stamp(built, split, "verify")["outputs"]["bytes_read"] == tar.stat().st_size  # one read
        assert mds["source"] == "tar" and mds["bytes_read"] == sum(len(b) for b in fixture.members(split).values())
        assert mds["versions"]["mosaicml-streaming"] and mds["versions"]["Pillow"]
        assert mds["workers"] == min(READERS, len(os.sched_getaffinity(0)))  # full size, WORKERS not set
        assert all(stamp(built, split, s)["seconds"] >= 0 for s in ("download", "verify", "untar", "mds"))


def test_a_finished_pipeline_is_not_redone(built: Path, fixture: Fixture, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    before = {p: (p.read_text(), p.stat().st_mtime_ns) for p in Paths(data).stamps.iterdir()}
    done = make("val", f"CONFIG={fixture.config}", f"DATA={data}")
    # Each stage found itself done and did nothing else (no progress, no "done in").
    said = [line for line in done.stderr.splitlines() if line.startswith("[")]
    assert said == [f"[{s} val] up to date ({Paths(data).stamp('val', s)})" for s in ("download", "verify", "mds")]
    assert {p: (p.read_text(), p.stat().st_mtime_ns) for p in Paths(data).stamps.iterdir()} == before


def test_a_changed_mds_setting_redoes_only_mds(built: Path, fixture: Fixture, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("small-shards", **{"mds.size_limit": 8192})
    before = {s: stamp(data, "val", s) for s in ("download", "verify", "untar", "mds")}
    done = make("val", f"CONFIG={config}", f"DATA={data}")
    for s in ("download", "verify"):
        assert f"[{s} val] up to date" in done.stderr
        assert stamp(data, "val", s) == before[s]
    after = stamp(data, "val", "mds")["outputs"]
    assert after["shards"] > before["mds"]["outputs"]["shards"]
    assert [s["raw"] for s in read_mds(Paths(data).mds("val"))] == [
        s["raw"] for s in read_mds(Paths(built).mds("val"))]


def test_the_verify_index_locates_every_image_in_the_archive(fixture: Fixture, built: Path):
    for split in ("train", "val"):
        sources = fixture.members(split)
        rows = read_index(Paths(built).index(split))
        assert [(r.wnid, r.name) for r in rows] == sorted((r.wnid, r.name) for r in rows)  # ImageFolder order
        with open(Paths(built).tar(archive(split)), "rb") as f:
            for r in rows:
                f.seek(r.offset)
                assert f.read(r.size) == sources[r.name]
        assert len(rows) == len(sources)


def test_mds_from_the_tars_is_byte_identical_to_mds_from_the_folders(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    for split in ("train", "val"):
        make(f"clean-{split}", f"CONFIG={fixture.config}", f"DATA={data}")  # keeps tar, verify and index
        make(f"mds-{split}", "MDS_FROM=untar", f"CONFIG={fixture.config}", f"DATA={data}")
        assert stamp(data, split, "mds")["outputs"]["source"] == "untar"
        same = mds_files(Paths(data).mds(split))
        assert same == mds_files(Paths(built).mds(split))  # same shards, same index.json
        assert "index.json" in same and any(k.endswith(".mds") for k in same)


def test_one_worker_and_three_give_the_same_samples_in_the_same_order(fixture: Fixture, built: Path,
                                                                     tmp_path: Path):
    config = fixture.variant("tiny-shards", **{"mds.size_limit": 4096})
    results = {}
    for workers in (1, 3):
        data = copy_data(built, tmp_path / f"data{workers}")
        make("mds-train", f"WORKERS={workers}", f"CONFIG={config}", f"DATA={data}")
        out = stamp(data, "train", "mds")["outputs"]
        assert out["workers"] == workers and out["shards"] > workers
        results[workers] = [(s["raw"], s["y"], s["wnid"]) for s in read_mds(Paths(data).mds("train"))]
    assert results[1] == results[3]
    assert len(results[1]) == TRAIN_PER_CLASS * len(WNIDS)
