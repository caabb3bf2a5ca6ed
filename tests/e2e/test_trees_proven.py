"""The ImageFolder trees proven like the shards, one member rule for mds and untar, classes.json
recorded and checked, and the train order checked against the seeded shuffle (issue 20)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.index import read_index
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.archives import JPEG, craft, custom
from how_to_imagenet.testing.runs import Fixture, checked, copy_data, make, one_error, rewrite, states

VAL1, VAL2 = (f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2))


def rot(tar: Path, pos: int) -> None:
    """One byte flipped, the mtime kept (as bit rot would)."""
    st = tar.stat()
    with open(tar, "r+b") as f:
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(tar, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_untar_proves_every_file_against_verify_and_mends_bit_rot_as_mds_does(fixture: Fixture, built: Path,
                                                                                tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    row = read_index(Paths(data).index("val"))[5]
    rot(Paths(data).tar(archive("val")), row.offset + row.size // 2)
    shutil.rmtree(Paths(data).untar("val"))
    Paths(data).stamp("val", "untar").unlink()
    line = one_error(make("untar-val", *cfg, check=False))
    assert f"{row.wnid}/{row.name}, unpacked, is not the image verify read" in line
    assert "run the same command again to repair it from the torrent" in line
    assert not Paths(data).untar("val").exists() and not Paths(data).stamp("val", "untar").exists()
    make("untar-val", *cfg)  # verified again: the bad piece fetched, then unpacked and proven
    tree = {p.name: p.read_bytes() for p in Paths(data).untar("val").rglob("*.JPEG")}
    assert tree == fixture.members("val")


@pytest.mark.parametrize(("member", "said"), [
    (b"", f"{VAL2}: not a readable image"),
    (b"garbage, not a JPEG", f"{VAL2}: not a readable image"),
])
def test_a_member_mds_would_refuse_is_refused_by_verify_so_untar_never_unpacks_it(tmp_path: Path, member: bytes,
                                                                                  said: str):
    config = custom(tmp_path / "src", "val", craft([(VAL1, JPEG), (VAL2, member)]), 2)
    line = one_error(make("untar-val", f"CONFIG={config}", f"DATA={tmp_path / 'data'}", check=False))
    assert said in line and "never unpacked nor written" in line
    assert not Paths(tmp_path / "data").untar("val").exists()


def test_a_sparse_member_is_refused_by_name_before_anything_is_unpacked(tmp_path: Path):
    import tarfile

    info = tarfile.TarInfo(VAL2)
    info.size = len(JPEG)
    info.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(len(JPEG) + 4096)}
    sparse = info.tobuf(tarfile.PAX_FORMAT) + JPEG + bytes(-len(JPEG) % 512)
    config = custom(tmp_path / "src", "val", craft([(VAL1, JPEG), sparse]), 2)
    line = one_error(make("untar-val", f"CONFIG={config}", f"DATA={tmp_path / 'data'}", check=False))
    assert f"member '{VAL2}' carries the pax record GNU.sparse.major" in line
    assert not Paths(tmp_path / "data").untar("val").exists()


@pytest.mark.parametrize("change", ["flip", "extra", "lost"])
def test_make_check_checks_the_unpacked_tree_and_untar_mends_it(fixture: Fixture, built: Path, tmp_path: Path,
                                                                change: str):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    root = Paths(data).untar("val")
    victim = sorted(root.rglob("*.JPEG"))[3]
    if change == "flip":
        raw = bytearray(victim.read_bytes())
        raw[len(raw) // 2] ^= 1
        victim.write_bytes(raw)
    elif change == "extra":
        shutil.copy(victim, victim.with_name("n00000000_1.JPEG"))
    else:
        victim.unlink()
    with pytest.raises(UserError, match="check of the val ImageFolder tree failed: ") as e:
        checked(fixture.config, data, "val")
    assert "'make untar-val'" in str(e.value)
    said = {"flip": f"{victim} is not the image verify read", "extra": "n00000000_1.JPEG is not an image verify",
            "lost": f"{victim} is missing"}[change]
    assert said in str(e.value)
    assert states(fixture.config, data)[("val", "untar")] == "damaged"
    assert "[untar val] done" in make("untar-val", *cfg).stderr
    assert ": OK" in checked(fixture.config, data, "val")


def test_classes_json_is_recorded_by_mds_and_a_lost_or_edited_one_is_damaged_and_rebuilt(fixture: Fixture,
                                                                                          built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    meta = Paths(data).mds("val") / "classes.json"
    good = meta.read_bytes()
    meta.unlink()
    status = make("status", *cfg).stdout
    assert "\nval    mds       damaged " in status and f"{meta} is missing" in status
    assert "[mds val] done" in make("val", *cfg).stderr and meta.read_bytes() == good
    swapped = json.loads(good)
    swapped[0]["name"], swapped[1]["name"] = swapped[1]["name"], swapped[0]["name"]  # tench <-> goldfish
    meta.write_text(json.dumps(swapped))
    assert f"{meta} changed since mds wrote it" in make("status", *cfg).stdout
    with pytest.raises(UserError, match=r"classes\.json changed since mds wrote it"):
        checked(fixture.config, data, "val")
    # A stamp that did not record it (an older version): check itself compares it with the ground truth.
    stamp = Paths(data).stamp("val", "mds")
    old = json.loads(stamp.read_text())
    del old["outputs"]["classes_xxh3"]
    stamp.write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"classes.json: entry 0 is .*the ground truth's is n01440764 'tench'"):
        checked(fixture.config, data, "val")


def test_train_shards_out_of_the_seeded_order_fail_check(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    rewrite(Paths(data).mds("train"), lambda samples: samples[::-1])  # each sample once, with its class
    with pytest.raises(UserError, match=r"\d+ samples are out of the order mds\.shuffle_seed 0 draws: sample 0 "):
        checked(fixture.config, data, "train")
