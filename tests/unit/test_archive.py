"""The archive walk, the name rules and the verify index, in-process: what the archives may hold,
and every hostile archive refused at every nesting level before anything is unpacked. (The few
end-to-end runs through make and GNU tar are in e2e/test_safety.py.)"""

from __future__ import annotations

import dataclasses
import random
import re
import tarfile
from pathlib import Path

import pytest

from how_to_imagenet.pipeline.archives.class_tars import check_class_image
from how_to_imagenet.pipeline.archives.labelled_files import val_label
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.context import Context, Options
from how_to_imagenet.pipeline.index import Image, read_index
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.stages.download import download
from how_to_imagenet.pipeline.stages.verify import verify
from how_to_imagenet.pipeline.tarwalk import header
from how_to_imagenet.testing.archives import CASES, EXPECTED, JPEG, archive_for, craft, custom
from how_to_imagenet.testing.fixture import fake_photo
from how_to_imagenet.testing.runs import PROJECT


def verify_archive(root: Path, split: str, data: bytes, images: int, layout: str | None = None) -> list[Image]:
    """What `make verify-SPLIT` does with these archive bytes, in this process: the index it writes."""
    config = custom(root / "src", split, data, images, layout)
    ctx = Context(load_config(config), Paths(root / "data"), Options(yes=True))
    spec = ctx.cfg.split(split)
    download(ctx, spec)  # a local source: linked
    verify(ctx, spec)
    return read_index(ctx.paths.index(split))


def test_a_good_archive_is_indexed_in_imagefolder_order(tmp_path: Path):
    other = fake_photo(random.Random(1))  # another size (every member must be a readable image: verify checks)
    inner = craft([("n01443537_2.JPEG", JPEG), ("n01443537_10.JPEG", other)])
    rows = verify_archive(tmp_path, "train", craft([("n01443537.tar", inner), ("n01440764.tar", craft([
        ("n01440764_5.JPEG", JPEG)]))]), 3)
    assert [(r.wnid, r.name) for r in rows] == [("n01440764", "n01440764_5.JPEG"), ("n01443537", "n01443537_10.JPEG"),
                                                ("n01443537", "n01443537_2.JPEG")]
    raw = (tmp_path / "src" / "ILSVRC2012_img_train.tar").read_bytes()
    assert [raw[r.offset : r.offset + r.size] for r in rows] == [JPEG, other, JPEG] and len(other) != len(JPEG)


def test_a_splits_archive_layout_is_the_value_in_its_config_row(tmp_path: Path):
    class_tars = craft([("n01440764.tar", craft([("n01440764_5.JPEG", JPEG)]))])
    rows = verify_archive(tmp_path / "a", "val", class_tars, 1, layout="class_tars")  # val's row, train's layout
    assert [(r.wnid, r.name) for r in rows] == [("n01440764", "n01440764_5.JPEG")]
    with pytest.raises(UserError, match=re.escape("member 'n01440764.tar' is not a labelled val image")):
        verify_archive(tmp_path / "b", "val", class_tars, 1)  # val's own layout by default
    assert [load_config(PROJECT / "config.yaml").split(s).reader.name for s in ("train", "val")] == [
        "class_tars", "labelled_files"]


def test_the_name_rules():
    assert val_label("x", "ILSVRC2012_val_00000001.JPEG") == "n01751748"
    for bad in ("ILSVRC2012_val_00050001.JPEG", "ILSVRC2012_val_1.JPEG", "ILSVRC2012_val_00000001.jpeg"):
        with pytest.raises(UserError, match="is not a labelled val image"):
            val_label("x", bad)
    check_class_image("x", "n01440764.tar", "n01440764", "n01440764_18.JPEG")
    for bad in ("n01440764_18.jpeg", "n01443537_1.JPEG", "../n01440764_1.JPEG", "n01440764_x.JPEG"):
        with pytest.raises(UserError, match=re.escape("is not a n01440764_<n>.JPEG image")):
            check_class_image("x", "n01440764.tar", "n01440764", bad)


VAL1, VAL2, VAL3 = (f"ILSVRC2012_val_{i:08d}.JPEG" for i in (1, 2, 3))


@pytest.mark.parametrize(("split", "members", "images", "message"), [
    ("val", [(VAL1, JPEG), (VAL2, JPEG)], 3, "holds 2 images, but splits.val.images"),
    ("val", [(VAL1, JPEG), (VAL2, JPEG), (VAL3, JPEG), ("README.txt", b"hi")], 3,
     "member 'README.txt' is not a labelled val image"),
    ("val", [(VAL1, JPEG), ("ILSVRC2012_val_00099999.JPEG", JPEG)], 2,
     "member 'ILSVRC2012_val_00099999.JPEG' is not a labelled val image"),
    ("train", [("n01440764.tar", craft([("n01440764_1.JPEG", JPEG), ("notes.txt", b"hi")]))], 2,
     "member n01440764.tar/notes.txt is not a n01440764_<n>.JPEG image"),
    ("train", [("n01440764.tar", craft([("n01440764_1.JPEG", JPEG), ("n01443537_7.JPEG", JPEG)]))], 2,
     "member n01440764.tar/n01443537_7.JPEG is not a n01440764_<n>.JPEG image"),
    ("train", [("n01440764.tar", craft([("n01440764_1.JPEG", JPEG)])), ("n99999999.tar", craft([]))], 1,
     "member 'n99999999.tar' is not a class tar"),
])
def test_an_archive_with_missing_extra_or_misfiled_images_fails_verify_naming_the_member(
        tmp_path: Path, split: str, members: list, images: int, message: str):
    with pytest.raises(UserError, match=re.escape(message)):
        verify_archive(tmp_path, split, craft(members), images)


@pytest.mark.parametrize("level", ["val", "train-outer", "train-inner"])
@pytest.mark.parametrize("case", CASES)
def test_a_hostile_archive_is_refused_by_verify_naming_the_member(tmp_path: Path, level: str, case: str):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "sentinel.txt").write_text("keep")
    split, data, images = archive_for(level, case, outside)
    with pytest.raises(UserError) as refused:
        verify_archive(tmp_path, split, data, images)
    line = str(refused.value)
    assert EXPECTED[case] in line and ("member" in line or "images" in line or "pax" in line), line
    if case == "flood":
        assert "one too many" in line or "is not a class tar" in line
    assert not Paths(tmp_path / "data").index(split).exists() and not list(tmp_path.glob("data/index/*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "outside", "src"]
    assert [p.name for p in outside.iterdir()] == ["sentinel.txt"] and (outside / "sentinel.txt").read_text() == "keep"


def frombuf(buf: bytes) -> tuple[str, bytes, int] | str:
    try:
        info = tarfile.TarInfo.frombuf(buf, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        return f"{type(e).__name__}: {e}"
    return info.name, info.type, info.size


def header_or_error(buf: bytes) -> tuple[str, bytes, int] | str:
    try:
        return header(buf)
    except tarfile.HeaderError as e:
        return f"{type(e).__name__}: {e}"


def test_the_walks_header_reader_reads_every_header_as_tarfile_does():
    """tarwalk.header's own reading of a regular file's header against tarfile's, on headers of every
    format and type, each then damaged at random (a byte of a number, the checksum, the type, the name
    or prefix; base-256 sizes), its checksum made right again more often than not (unsigned or signed)."""
    rng = random.Random(7)
    fields = [(0, 100), (100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156), (156, 157),
              (257, 265), (329, 337), (337, 345), (345, 500)]
    seen = {"fast": 0, "other": 0}
    for case in range(4000):
        info = tarfile.TarInfo(rng.choice(["n01440764_1.JPEG", "a/" * 60 + "b.JPEG", "é.JPEG", "d/"]))
        info.size = rng.choice([0, 1, 103551, 8 << 30])
        info.type = rng.choice([tarfile.REGTYPE, tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE])
        fmt = rng.choice([tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT, tarfile.PAX_FORMAT])
        try:
            buf = bytearray(info.tobuf(fmt, "utf-8", "surrogateescape")[-512:])  # the member's own header
        except ValueError:
            continue  # a name or size the format cannot hold
        for _ in range(rng.choice([0, 1, 2])):
            a, b = rng.choice(fields)
            buf[rng.randrange(a, b)] = rng.choice([0, 0x20, 0x30, 0x37, 0x38, 0x80, 0xFF, rng.randrange(256)])
        if rng.random() < 0.1:  # a size in base-256, as GNU tar writes one of 8 GiB and more
            buf[124:136] = b"\x80" + info.size.to_bytes(11, "big")
        if rng.random() < 0.6:  # the checksum made right again: the damage reaches the other fields' reading
            buf[148:156] = b" " * 8
            signed = rng.random() < 0.2  # as some old tars sum the bytes: as signed chars
            total = sum(b - 256 if signed and b > 127 else b for b in buf)
            buf[148:156] = (b"\xff" + (total % (1 << 56)).to_bytes(7, "big")) if total < 0 else (
                b"%06o\0 " % (total & 0o777777))
        want = frombuf(bytes(buf))
        assert header_or_error(bytes(buf)) == want, (case, bytes(buf))
        assert header_or_error(bytes(buf[:511])) == frombuf(bytes(buf[:511]))  # short: tarfile's error
        seen["fast" if buf[156:157] == tarfile.REGTYPE and not isinstance(want, str) else "other"] += 1
    assert seen["fast"] > 500 and seen["other"] > 1000, seen  # both paths, many times


def test_an_image_hashed_keeps_every_other_field():
    """Image.hashed builds the row field by field: every field, present and future, is carried over."""
    values = {"str": "a value", "int": 7}
    image = Image(**{f.name: values[str(f.type)] for f in dataclasses.fields(Image)})
    assert image.hashed("0123") == dataclasses.replace(image, xxh3="0123")
