"""Data you can trust: the RGB guarantee, make check, class metadata, reproducible bytes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from how_to_imagenet.labels import val_wnid
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.context import Context
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.stages.check import check_splits
from how_to_imagenet.testing.fixture import QUIRKS
from how_to_imagenet.testing.runs import Fixture, checked, copy_data, make, mds_files, read_mds, rewrite, states


def report(data: Path, split: str, kind: str) -> dict:
    return json.loads(Paths(data).report(split, kind).read_text())


def test_every_non_rgb_image_is_reencoded_and_listed_with_its_original_format(built: Path):
    listed = {}
    for split in ("train", "val"):
        r = report(built, split, "mds")
        listed.update({Path(e["file"]).name: (e["format"], e["mode"]) for e in r["reencoded"]})
        assert r["rgb"] is True and r["versions"]["Pillow"] and r["versions"]["mosaicml-streaming"]
        samples = read_mds(Paths(built).mds(split))
        assert all(s["x"].mode == "RGB" and s["x"].format == "JPEG" for s in samples)
        for e in r["reencoded"]:
            assert samples[e["sample"]]["wnid"] == e["file"].split("/")[0]
    assert listed == {"n01739381_1309.JPEG": ("JPEG", "CMYK"), "ILSVRC2012_val_00019877.JPEG": ("JPEG", "CMYK"),
                      "n01440764_10026.JPEG": ("JPEG", "L"), "n02105855_2933.JPEG": ("PNG", "RGB")}
    assert set(listed) == set(QUIRKS)


def test_rgb_false_keeps_every_byte_as_it_came(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("raw", **{"mds.rgb": False})
    make("mds-val", f"CONFIG={config}", f"DATA={data}")
    sources = fixture.members("val")
    samples = read_mds(Paths(data).mds("val"))
    assert [s["raw"] for s in samples] == [sources[n] for n in sorted(sources, key=lambda n: (val_wnid(n), n))]
    assert {s["x"].mode for s in samples} == {"RGB", "CMYK"}
    assert report(data, "val", "mds")["reencoded"] == []


def test_check_passes_on_good_data_decodes_to_rgb_and_writes_a_report(fixture: Fixture, built: Path,
                                                                      tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    before = (Paths(data).stamp("val", "mds")).read_text()
    done = make("check", "DECODE=1", "WORKERS=1", f"CONFIG={fixture.config}", f"DATA={data}")
    assert "scripts/mds.py" not in done.stdout and (Paths(data).stamp("val", "mds")).read_text() == before
    assert "[check train] 48 samples" in done.stderr and "all decoded to RGB: OK" in done.stderr
    for split, n in (("train", 48), ("val", 24)):
        r = report(data, split, "check")
        assert r["ok"] and r["samples"] == n and r["failures"] == [] and r["decode"] and r["classes"] == 8
    status = make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    assert "make check of ILSVRC2012_img_val: 24 samples, OK\n" in status
    (Paths(data).stamp("val", "mds")).touch()  # an up-to-date run touches the stamp: the check still holds
    assert "make check of ILSVRC2012_img_val: 24 samples, OK\n" in make("status", f"CONFIG={fixture.config}",
                                                                        f"DATA={data}").stdout
    make("mds-val", "WORKERS=1", f"CONFIG={config_variant(fixture)}", f"DATA={data}")  # shards written again
    status = make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    assert "make check of ILSVRC2012_img_val: 24 samples, OK (older than the shards: run it again)" in status


def config_variant(fixture: Fixture) -> Path:
    return fixture.variant("bigger-shards", **{"mds.size_limit": 1 << 17})


def failed_check(fixture: Fixture, data: Path, split: str, capsys: pytest.CaptureFixture[str]) -> str:
    """`make check-SPLIT`'s work, in this process (streaming is imported here already): it must fail."""
    with pytest.raises(UserError) as failed:
        check_splits(Context(load_config(fixture.config), Paths(data)), [split])
    assert not report(data, split, "check")["ok"]
    return capsys.readouterr().err + f"error: {failed.value}"


def test_check_fails_on_a_corrupted_shard_byte_naming_the_shard(fixture: Fixture, built: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]):
    data = copy_data(built, tmp_path / "data")
    shard = sorted((Paths(data).mds("val")).glob("*/*.mds"))[0]
    raw = bytearray(shard.read_bytes())
    raw[-100] ^= 1
    shard.write_bytes(raw)
    err = failed_check(fixture, data, "val", capsys)
    assert f"shard {shard.parent.name}/{shard.name}: xxh64 is " in err and "index.json says" in err
    assert "run 'make val' to redo what is wrong, then check again" in err
    # The failed check makes the shards damaged for the pipeline: the advised command writes them again.
    assert states(fixture.config, data)[("val", "mds")] == "damaged"
    assert "make check found them wrong (shard " in make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    assert "[mds val] done" in make("val", f"CONFIG={fixture.config}", f"DATA={data}").stderr
    checked(fixture.config, data, "val")


def test_check_fails_on_a_dropped_sample(fixture: Fixture, built: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]):
    data = copy_data(built, tmp_path / "data")
    rewrite(Paths(data).mds("train"), lambda samples: samples[:5] + samples[6:])
    err = failed_check(fixture, data, "train", capsys)
    assert "47 samples, but splits.train.images is 48" in err
    assert "is missing or mislabelled" in Paths(data).report("train", "check").read_text()


def test_check_fails_on_a_sample_stored_twice_in_place_of_another(fixture: Fixture, built: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]):
    data = copy_data(built, tmp_path / "data")
    kept = read_mds(Paths(data).mds("train"))
    twin = next(n for n in range(1, len(kept)) if kept[n]["wnid"] == kept[0]["wnid"])  # same class: counts hold

    def duplicate(samples: list[dict]) -> list[dict]:
        samples[twin] = samples[0]
        return samples

    rewrite(Paths(data).mds("train"), duplicate)
    err = failed_check(fixture, data, "train", capsys)
    assert "is stored 2 times" in err and "is missing or mislabelled" in err


def test_check_fails_on_a_swapped_label(fixture: Fixture, built: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]):
    data = copy_data(built, tmp_path / "data")

    def swap(samples: list[dict]) -> list[dict]:
        samples[0]["y"], samples[-1]["y"] = samples[-1]["y"], samples[0]["y"]
        return samples

    rewrite(Paths(data).mds("val"), swap)
    err = failed_check(fixture, data, "val", capsys)
    assert "sample 0: y is 999, but n01440764 is class 0 of the sorted wnids" in err


def test_check_fails_when_a_sample_carries_another_class(fixture: Fixture, built: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]):
    data = copy_data(built, tmp_path / "data")

    def relabel(samples: list[dict]) -> list[dict]:
        samples[0]["wnid"], samples[0]["y"] = "n01443537", 1  # consistent y and wnid, wrong class
        return samples

    rewrite(Paths(data).mds("train"), relabel)
    err = failed_check(fixture, data, "train", capsys)
    assert "is missing or mislabelled" in err and "class n01443537: 7 samples, the archive holds 6" in err


def test_classes_json_travels_with_the_data(built: Path):
    for split, n in (("train", 6), ("val", 3)):
        classes = json.loads((Paths(built).mds(split) / "classes.json").read_text())
        assert [c["index"] for c in classes] == list(range(1000))
        assert len({c["name"] for c in classes}) == 1000 and len({c["short"] for c in classes}) == 1000
        assert classes[134]["name"] == "crane" and classes[517]["name"] == "construction crane"
        assert classes[638]["name"] == "maillot" and classes[639]["name"] == "tank suit"
        assert classes[0] == {"index": 0, "wnid": "n01440764", "name": "tench", "wordnet": "tench, Tinca tinca",
                              "short": "tench", "images": n}
        assert sum(c["images"] for c in classes) == 8 * n


def test_the_same_archives_and_config_give_byte_identical_shards(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    for split in ("train", "val"):
        make(f"clean-{split}", f"CONFIG={fixture.config}", f"DATA={data}")
        make(f"mds-{split}", f"CONFIG={fixture.config}", f"DATA={data}")
        again = mds_files(Paths(data).mds(split))
        assert again == mds_files(Paths(built).mds(split))
        assert {"index.json", "classes.json", "00000/index.json"} <= set(again)
