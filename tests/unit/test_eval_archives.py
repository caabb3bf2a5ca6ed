"""The test sets' archive layouts, in-process: ImageNetV2's number folders, A and R's wnid folders with a
README.txt, Sketch's zip read by member offset (stored and deflated, zip64 too); a tar opened by its
content whatever its name; every hostile zip and every bad input refused with one line naming the
archive and the member, before anything is written."""

from __future__ import annotations

import gzip
import io
import random
import re
import struct
import zipfile
from pathlib import Path

import pytest

from how_to_imagenet.labels import class_index, wnids
from how_to_imagenet.names import EVAL_SPLITS
from how_to_imagenet.pipeline.archives import read
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.context import Context, Options
from how_to_imagenet.pipeline.index import Image, read_index
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.stages.download import download
from how_to_imagenet.pipeline.stages.verify import verify
from how_to_imagenet.testing.archives import JPEG, custom
from how_to_imagenet.testing.evals import (
    ARCHIVES,
    LAYOUTS,
    archive_bytes,
    expected,
    members,
    tar_with_folders,
    zip_bytes,
)
from how_to_imagenet.testing.fixture import fake_photo
from how_to_imagenet.testing.runs import PROJECT

OTHER = fake_photo(random.Random(1))


def verify_archive(root: Path, split: str, data: bytes, images: int) -> list[Image]:
    """What `make verify-SPLIT` does with these archive bytes (its layout: the split's default), in this
    process: the index it writes."""
    config = custom(root / "src", split, data, images)
    ctx = Context(load_config(config), Paths(root / "data"), Options(yes=True))
    spec = ctx.cfg.split(split)
    download(ctx, spec)  # a local source: linked
    verify(ctx, spec)
    return read_index(ctx.paths.index(split))


def refused(root: Path, split: str, data: bytes, images: int, match: str) -> str:
    """The one error verify gives these bytes; nothing was indexed."""
    with pytest.raises(UserError, match=re.escape(match)) as e:
        verify_archive(root, split, data, images)
    assert not list((root / "data").rglob("*.tsv*")), "an index was written"
    assert "\n" not in str(e.value)
    return str(e.value)


def read_all(root: Path, split: str, rows: list[Image]) -> list[bytes]:
    tar = next((root / "src").glob("ILSVRC2012_img_*"))
    with open(tar, "rb") as f:
        return [read(f.fileno(), r, str(tar)) for r in rows]


@pytest.mark.parametrize("split", list(ARCHIVES))
def test_each_test_set_is_indexed_in_its_real_layout_with_y_the_index_among_the_1000(tmp_path: Path, split: str):
    files = members(split, random.Random(3))
    want = expected(split, files)
    rows = verify_archive(tmp_path, split, archive_bytes(split, files), len(want))
    assert [(class_index()[r.wnid], r.name) for r in rows] == [(y, name) for y, name, _ in want]
    assert read_all(tmp_path, split, rows) == [data for _, _, data in want]
    assert load_config(PROJECT / "config.yaml").split(split).reader.name == LAYOUTS[split]


def test_imagenet_v2_number_folders_are_class_indices_not_strings_to_sort():
    files = members("imagenet-v2-top-images", random.Random(3))
    got = sorted({(int(n.split("/")[1]), class_index()[w]) for n, _ in files for w in [wnids()[int(n.split("/")[1])]]})
    assert got == [(0, 0), (1, 1), (2, 2), (10, 10), (100, 100), (999, 999)]  # folder "10" is class 10, not the 4th
    assert sorted(str(c) for c, _ in got) == ["0", "1", "10", "100", "2", "999"]  # what ImageFolder would sort


def test_a_tar_is_opened_by_its_content_and_a_real_gzip_is_one_line(tmp_path: Path):
    top = "imagenetv2-top-images-format-val"
    files = [(f"{top}/0/a.jpeg", JPEG), (f"{top}/999/b.jpeg", OTHER)]
    rows = verify_archive(tmp_path / "plain", "imagenet-v2-top-images", tar_with_folders(files), 2)
    assert [(r.wnid, r.name) for r in rows] == [(wnids()[0], "a.jpeg"), (wnids()[999], "b.jpeg")]
    line = refused(tmp_path / "gz", "imagenet-v2-top-images", gzip.compress(tar_with_folders(files), mtime=0), 2,
                   "gzip-compressed, so its images cannot be read in place")
    assert "gunzip -c" in line
    zipped = verify_archive(tmp_path / "zip", "imagenet-v2-top-images", zip_bytes(files), 2)  # a zip, by content
    assert [(r.wnid, r.name) for r in zipped] == [(r.wnid, r.name) for r in rows]


def test_a_tar_made_from_its_folder_with_dot_slash_names_reads_the_same(tmp_path: Path):
    files = [("./", b""), ("./imagenet-a/", b""), ("./imagenet-a/README.txt", b"x"),
             (f"./imagenet-a/{wnids()[999]}/b.jpg", OTHER), (f"./imagenet-a/{wnids()[0]}/a.jpg", JPEG)]
    rows = verify_archive(tmp_path, "imagenet-a", tar_with_folders(files), 2)
    assert [(r.wnid, r.name) for r in rows] == [(wnids()[0], "a.jpg"), (wnids()[999], "b.jpg")]
    assert read_all(tmp_path, "imagenet-a", rows) == [JPEG, OTHER]


def test_a_zip64_zip_stored_and_deflated_reads_the_same_images(tmp_path: Path):
    files = [(f"sketch/{wnids()[c]}/sketch_{k}.JPEG", data) for c in (0, 999) for k, data in ((1, JPEG), (2, OTHER))]
    data = zip_bytes(files, zip64=True)
    assert b"PK\x06\x06" in data and b"PK\x06\x07" in data  # the zip64 end record and its locator
    plain = verify_archive(tmp_path / "a", "imagenet-sketch", zip_bytes(files), 4)
    wide = verify_archive(tmp_path / "b", "imagenet-sketch", data, 4)
    assert [r.codec.split(":")[0] for r in plain] == [r.codec.split(":")[0] for r in wide] == ["0", "8", "0", "8"]
    assert read_all(tmp_path / "a", "imagenet-sketch", plain) == read_all(tmp_path / "b", "imagenet-sketch", wide) == [
        JPEG, OTHER, JPEG, OTHER]


SKETCH = [(f"sketch/{wnids()[0]}/sketch_1.JPEG", JPEG), (f"sketch/{wnids()[999]}/sketch_1.JPEG", OTHER)]


def symlink_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(SKETCH[0][0], SKETCH[0][1])
        info = zipfile.ZipInfo(SKETCH[1][0], (2012, 5, 1, 0, 0, 0))
        info.create_system, info.external_attr = 3, (0o120777 << 16)
        z.writestr(info, "/etc/passwd")
    return buf.getvalue()


def duplicate_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z, pytest.warns(UserWarning):
        z.writestr(SKETCH[0][0], SKETCH[0][1])
        z.writestr(SKETCH[0][0], SKETCH[1][1])
    return buf.getvalue()


def patched(data: bytes, find: bytes, offset: int, value: bytes, member: str | None = None) -> bytes:
    """`data` with `value` written `offset` bytes into the record starting with `find` (a local or central
    header: the one of `member`)."""
    at = data.index(find)
    if member is not None:
        skip = 30 if find == b"PK\x03\x04" else 46
        while data[at + skip : at + skip + len(member)] != member.encode():
            at = data.index(find, at + 1)
    return data[: at + offset] + value + data[at + offset + len(value) :]


def hostile_zips() -> dict[str, tuple[bytes, str]]:
    good = zip_bytes(SKETCH, deflate=True)
    stored = zip_bytes(SKETCH, deflate=False)
    wide = zip_bytes(SKETCH, zip64=True)
    first, second = SKETCH[0][0], SKETCH[1][0]  # stored, and (in `good`) deflated
    return {
        "absolute": (zip_bytes([("/sketch/n01440764/a.JPEG", JPEG)]), "is not a relative <top>/<class>/<file> name"),
        "dotdot": (zip_bytes([("sketch/../../etc/a.JPEG", JPEG)]), "is not a relative <top>/<class>/<file> name"),
        "symlink": (symlink_zip(), "is a symlink, not a regular file"),
        "duplicate": (duplicate_zip(), "appears more than once"),
        # The central directory's compressed size of the first member (stored: both sizes) says 10 bytes more.
        "central-size-lies": (patched(stored, b"PK\x01\x02", 20, struct.pack("<I", len(JPEG) + 10), first),
                              "its sizes lie"),
        "local-size-lies": (patched(stored, b"PK\x03\x04", 22, struct.pack("<I", len(JPEG) + 10), first),
                            "its sizes lie"),
        # A deflated member whose unpacked size (both headers) says one byte more than it inflates to.
        "inflated-size-lies": (patched(patched(good, b"PK\x01\x02", 24, struct.pack("<I", len(OTHER) + 1), second),
                                       b"PK\x03\x04", 22, struct.pack("<I", len(OTHER) + 1), second),
                               "does not inflate to exactly"),
        "crc-lies": (patched(patched(stored, b"PK\x01\x02", 16, b"\0\0\0\0", first), b"PK\x03\x04", 14, b"\0\0\0\0",
                             first),
                     "CRC-32 is not the 00000000 its header says"),
        "zip64-locator-lies": (patched(wide, b"PK\x06\x07", 8, struct.pack("<Q", 3)), "its zip64 locator points at"),
        "zip64-record-disagrees": (patched(wide, b"PK\x05\x06", 8, struct.pack("<HH", 4, 4)),
                                   "its end record and zip64 end record disagree on the entries"),
        "comment": (good[:-2] + b"\x05\x00" + b"hello", "an archive comment or bytes after its end record"),
        "trailing": (good + b"\0" * 100, "an archive comment or bytes after its end record"),
        "not-a-zip-end": (good[:-10], "an archive comment or bytes after its end record"),
    }


@pytest.mark.parametrize("case", list(hostile_zips()))
def test_every_hostile_zip_is_refused_in_one_line_naming_it(tmp_path: Path, case: str):
    data, match = hostile_zips()[case]
    line = refused(tmp_path, "imagenet-sketch", data, 2, match)
    assert "ILSVRC2012_img_imagenet-sketch.tar" in line


BAD_INPUT = {
    "v2-folder-not-a-number": ("imagenet-v2-matched-frequency", [("v2/0/a.jpeg", JPEG), ("v2/tench/b.jpeg", OTHER)],
                               "member 'v2/tench': class folder 'tench' is not a class index 0..999"),
    "v2-folder-zero-padded": ("imagenet-v2-matched-frequency", [("v2/007/a.jpeg", JPEG)],
                              "member 'v2/007': class folder '007' is not a class index 0..999"),
    "v2-folder-past-999": ("imagenet-v2-threshold0.7", [("v2/1000/a.jpeg", JPEG)],
                           "member 'v2/1000': class folder '1000' is not a class index 0..999"),
    "wnid-not-among-the-1000": ("imagenet-a", [("imagenet-a/n99999999/a.jpg", JPEG)],
                                "member 'imagenet-a/n99999999': class folder 'n99999999' is not one of the 1000"),
    "empty-class-folder": ("imagenet-r", [("imagenet-r/n01440764/a.jpg", JPEG), ("imagenet-r/n15075141/", b"")],
                           "class folder 'imagenet-r/n15075141' holds no image"),
    "not-an-image": ("imagenet-r", [("imagenet-r/n01440764/a.jpg", JPEG), ("imagenet-r/n01440764/notes.txt", b"hi")],
                     "n01440764/notes.txt: not a readable image"),
    "second-top-folder": ("imagenet-a", [("imagenet-a/n01440764/a.jpg", JPEG), ("other/n01440764/b.jpg", OTHER)],
                          "member 'other' is outside the archive's one top folder 'imagenet-a'"),
    "stray-top-file": ("imagenet-a", [("imagenet-a/n01440764/a.jpg", JPEG), ("imagenet-a/LICENSE", b"x")],
                       "member 'imagenet-a/LICENSE' is not <top>/<wnid>/<image>"),
    "too-deep": ("imagenet-sketch", [("sketch/n01440764/x/a.JPEG", JPEG)],
                 "member 'sketch/n01440764/x' is not <top>/<wnid>/<image>"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_naming_the_archive_and_the_member(tmp_path: Path, case: str):
    split, files, match = BAD_INPUT[case]
    images = sum(1 for n, _ in files if not n.endswith("/"))
    data = tar_with_folders(files)
    line = refused(tmp_path, split, data, images, match)
    assert line.startswith(f"{tmp_path / 'data' / 'tar' / 'ILSVRC2012_img_'}{split}.tar: ")


def test_the_configs_six_test_set_rows_are_the_shipped_facts_and_their_checksums_are_listed():
    cfg = load_config(PROJECT / "config.yaml")
    tsv = PROJECT / "src/how_to_imagenet/data/eval_archives.tsv"
    rows = [line.split("\t") for line in tsv.read_text().splitlines()]
    facts = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert [f["name"] for f in facts] == [s.name for s in cfg.splits.values() if s.is_eval] == list(EVAL_SPLITS)
    sums = (PROJECT / "checksums/SHA256SUMS").read_text().splitlines()
    for f in facts:
        split = cfg.split(f["name"])
        urls = f["urls"].split(" ")
        assert (split.archive, split.bytes, split.images, [split.source, *split.mirrors]) == (
            f["archive"], int(f["bytes"]), int(f["images"]), urls)
        assert f"{f['sha256']}  {f['archive']}" in sums
    assert "a61312130a589d0ca1a8fca1f2bd3337  imagenet-r.tar" in (PROJECT / "checksums/MD5SUMS").read_text()
