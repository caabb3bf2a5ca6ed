"""The whole pipeline on the fixture, through make, with real aria2c, GNU tar and mosaicml-streaming."""

from __future__ import annotations

import json
import os
from pathlib import Path

from conftest import Fixture, copy_data, make, read_mds
from mds import permutation
from PIL import Image

from imagenet.fixture import TRAIN_PER_CLASS, VAL_PER_CLASS, WNIDS
from imagenet.labels import val_labels, wnids


def stamp(data: Path, split: str, stage: str) -> dict:
    return json.loads((data / ".stamps" / f"{split}.{stage}").read_text())


def test_val_mds_is_imagefolder_order_with_source_bytes_and_ground_truth_labels(fixture: Fixture, built: Path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(built / "untar" / "ILSVRC2012_img_val"))
    samples = read_mds(built / "mds" / "ILSVRC2012_img_val")
    sources = fixture.members("val")
    assert len(samples) == len(folder) == len(sources) == VAL_PER_CLASS * len(WNIDS)
    for s, (path, _) in zip(samples, folder.samples, strict=True):
        name = Path(path).name
        truth = val_labels()[int(name[15:23]) - 1]
        assert Path(path).parent.name == truth  # untar sorted it by the ground truth
        assert s["raw"] == sources[name]  # byte for byte, no re-encode
        assert (s["wnid"], s["y"]) == (truth, wnids().index(truth))
        assert isinstance(s["x"], Image.Image) and s["x"].size == Image.open(path).size


def test_y_is_the_index_among_all_1000_sorted_wnids_not_among_the_classes_present(built: Path):
    samples = read_mds(built / "mds" / "ILSVRC2012_img_val")
    assert {s["wnid"]: s["y"] for s in samples} == {
        "n01440764": 0, "n01443537": 1, "n02012849": 134, "n03126707": 517, "n15075141": 999}


def test_train_mds_is_the_seeded_permutation_of_imagefolder_order(fixture: Fixture, built: Path):
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(built / "untar" / "ILSVRC2012_img_train"))
    samples = read_mds(built / "mds" / "ILSVRC2012_img_train")
    sources = fixture.members("train")
    assert len(samples) == len(folder) == len(sources) == TRAIN_PER_CLASS * len(WNIDS)
    order = permutation(len(folder), seed=0)
    assert order != sorted(order)
    for s, i in zip(samples, order, strict=True):
        path = Path(folder.samples[i][0])
        assert s["raw"] == sources[path.name]
        assert s["wnid"] == path.parent.name == path.name.split("_")[0]
        assert s["y"] == wnids().index(s["wnid"])
    assert sorted(s["raw"] for s in samples) == sorted(sources.values())  # each source image exactly once


def test_permutation_is_fixed_by_the_seed():
    assert permutation(1000, 0) == permutation(1000, 0)
    assert permutation(1000, 0) != permutation(1000, 1)
    assert sorted(permutation(1000, 7)) == list(range(1000))
    assert permutation(10, 0) == [9, 4, 0, 5, 2, 7, 1, 3, 6, 8]  # pinned: the same order on every machine


def test_train_untar_is_an_imagefolder_tree_with_no_inner_tar_left(built: Path):
    root = built / "untar" / "ILSVRC2012_img_train"
    assert sorted(os.listdir(root)) == list(WNIDS)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert len(files) == TRAIN_PER_CLASS * len(WNIDS)
    assert all(p.suffix == ".JPEG" and p.name.startswith(p.parent.name + "_") for p in files)


def test_stamps_record_what_each_stage_produced(fixture: Fixture, built: Path):
    for split, per_class in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
        tar = built / "tar" / f"ILSVRC2012_img_{split}.tar"
        assert stamp(built, split, "download")["outputs"]["bytes"] == tar.stat().st_size
        sums = (fixture.root / "checksums" / "SHA256SUMS").read_text()
        assert f"{stamp(built, split, 'verify')['outputs']['sha256']}  {tar.name}" in sums
        untar = stamp(built, split, "untar")["outputs"]
        assert untar["per_class"] == {w: per_class for w in WNIDS}
        assert untar["images"] == stamp(built, split, "mds")["outputs"]["images"] == per_class * len(WNIDS)
        assert all(stamp(built, split, s)["seconds"] >= 0 for s in ("download", "verify", "untar", "mds"))


def test_a_finished_pipeline_is_not_redone(built: Path, fixture: Fixture, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    before = {p: p.read_text() for p in (data / ".stamps").iterdir()}
    done = make("val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert "scripts/" not in done.stdout  # no stage script ran
    assert {p: p.read_text() for p in (data / ".stamps").iterdir()} == before


def test_a_changed_mds_setting_redoes_only_mds(built: Path, fixture: Fixture, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("small-shards", **{"mds.size_limit": 8192})
    before = {s: stamp(data, "val", s) for s in ("download", "verify", "untar", "mds")}
    done = make("val", f"CONFIG={config}", f"DATA={data}")
    for s in ("download", "verify", "untar"):
        assert f"[{s} val] up to date" in done.stderr
        assert stamp(data, "val", s) == before[s]
    after = stamp(data, "val", "mds")["outputs"]
    assert after["shards"] > before["mds"]["outputs"]["shards"]
    assert [s["raw"] for s in read_mds(data / "mds" / "ILSVRC2012_img_val")] == [
        s["raw"] for s in read_mds(built / "mds" / "ILSVRC2012_img_val")]
