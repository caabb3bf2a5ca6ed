"""check and status trust nothing they read, and every fault is one `error:` line: flipped bytes in a
shard, stamps of the wrong shape, unreadable config and checksum files, DATA a file, a hostile
.torrent, samples before mds, odd Make values and config values (issue 20)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.runs import Fixture, checked, copy_data, make, one_error, states


def flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0xFF
    path.write_bytes(bytes(data))


def first_shard(data: Path) -> Path:
    return sorted(Paths(data).mds("val").glob("*/*.mds"))[0]


@pytest.mark.parametrize("hashes", [["sha1", "xxh64"], []], ids=["hashed", "no-hashes"])
def test_a_flipped_byte_in_a_shards_header_or_sample_table_is_a_fail_line_a_report_and_damaged(
        fixture: Fixture, built: Path, tmp_path: Path, hashes: list[str]):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant(f"hashes-{len(hashes)}", **{"mds.hashes": hashes})
    if not hashes:
        make("mds-val", f"CONFIG={config}", f"DATA={data}")  # shards whose index.json records no hash
    shard = first_shard(data)
    pristine = shard.read_bytes()
    first = int.from_bytes(pristine[4:8], "little")  # where sample 0 starts (its column sizes, then its bytes)
    # The sample count and the shard's own JSON, which streaming never reads: only a hash sees them; the
    # offsets and the first sample's column sizes.
    for pos in ([0, 4 + 4 * int.from_bytes(pristine[:4], "little") + 8, 6] if hashes else []) + [4, first + 1,
                                                                                                 first + 5]:
        shard.write_bytes(pristine)
        flip(shard, pos)
        with pytest.raises(UserError, match="check of val failed: ") as e:
            checked(config, data, "val")
        if hashes:
            assert f"shard {shard.parent.name}/{shard.name}: sha1 is " in str(e.value), pos
        report = json.loads(Paths(data).check_report("val").read_text())
        assert not report["ok"] and report["failures"], pos
        Paths(data).check_report("val").unlink()  # for the next position: the shards as mds wrote them
    # The last flip stays. Where streaming itself trips over the damage (no hashes): one line through make too.
    if not hashes:
        line = one_error(make("check-val", f"CONFIG={config}", f"DATA={data}", check=False))
        assert "check of val failed: " in line and "run 'make val'" in line
    else:
        with pytest.raises(UserError, match="check of val failed: "):
            checked(config, data, "val")
    assert states(config, data)[("val", "mds")] == "damaged"
    if hashes:
        make("val", f"CONFIG={config}", f"DATA={data}")  # the shards are written again
        assert ": OK" in checked(config, data, "val")


WRONG_SHAPES = {"mds": [{"inputs": {}, "outputs": {}}, [], {"inputs": {"mds": 5}, "outputs": {"path": 5}}],
                "verify": [{"stage": "verify", "split": "val", "inputs": {}, "outputs": {"path": "tar/x.tar"},
                            "seconds": 1, "finished": "x"}]}  # (no `index`: present would need it)


def test_a_stamp_of_the_wrong_shape_is_damaged_and_redone_by_the_next_run(fixture: Fixture, built: Path,
                                                                           tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    cfg = (f"CONFIG={fixture.config}", f"DATA={data}")
    for stage, shapes in WRONG_SHAPES.items():
        for stamp in shapes:
            Paths(data).stamp("val", stage).write_text(json.dumps(stamp))
            status = make("status", *cfg)
            assert "Traceback" not in status.stderr and f"damaged: val {stage}: " in status.stdout, stamp
            assert f"\nval    {stage:<9} damaged " in status.stdout
    with pytest.raises(UserError, match=r"the MDS dataset is damaged .*run 'make mds-val'"):
        checked(fixture.config, data, "val")  # `make check-val`, in this process
    done = make("val", *cfg)
    assert "[verify val] done" in done.stderr and "[mds val] done" in done.stderr and "Traceback" not in done.stderr
    assert {st for (split, _), st in states(fixture.config, data).items() if split == "val"} == {"done"}


def test_a_config_or_checksum_file_that_is_not_utf8_or_a_folder_is_one_line(fixture: Fixture, tmp_path: Path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(fixture.config.read_bytes() + "# caf\xe9\n".encode("latin-1"))
    assert "not UTF-8 text" in one_error(make("status", f"CONFIG={bad}", check=False))
    data = tmp_path / "data"
    for name, make_it in (("latin1", lambda f: f.write_bytes(b"# \xe9\n" + f.read_bytes())),
                          ("folder", lambda f: (f.unlink(), f.mkdir()))):
        sums = tmp_path / f"sums-{name}"
        shutil.copytree(fixture.root / "checksums", sums)
        make_it(sums / "MD5SUMS")
        config = fixture.variant(f"sums-{name}", checksums=str(sums))
        line = one_error(make("download-val", f"CONFIG={config}", f"DATA={data}", check=False))
        assert f"error: {sums / 'MD5SUMS'}: " in line
        assert ("not UTF-8" if name == "latin1" else "cannot read the checksum file (Is a directory)") in line
        assert not Paths(data).tar(archive("val")).exists()  # nothing was downloaded


def test_data_that_is_a_regular_file_is_one_line_and_the_file_is_kept(fixture: Fixture, tmp_path: Path):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    for target in ("status", "val", "clean-val-tar"):
        line = one_error(make(target, f"CONFIG={fixture.config}", f"DATA={file}", check=False))
        assert f"DATA={file}: {file} is a file, not a folder" in line
    assert file.read_text() == "mine"


def test_a_torrent_nested_deep_is_one_line(fixture: Fixture, tmp_path: Path):
    torrent = fixture.root / "torrents" / "deep.torrent"
    torrent.write_bytes(b"l" * 100_000 + b"e" * 100_000)
    config = fixture.variant("deep-torrent", **{"splits.val.source": "torrents/deep.torrent"})
    line = one_error(make("download-val", f"CONFIG={config}", f"DATA={tmp_path / 'data'}", check=False))
    assert "deep.torrent is not a single-file .torrent; check splits.val.source" in line


def test_samples_before_mds_is_one_line_naming_the_command(fixture: Fixture, tmp_path: Path):
    line = one_error(make("samples-val", f"CONFIG={fixture.config}", f"DATA={tmp_path / 'data'}", check=False))
    assert "the MDS dataset is missing; run 'make mds-val'" in line


@pytest.mark.parametrize("value", ["²", "٣", "3.0", "true"])
def test_a_make_number_that_is_not_ascii_digits_is_one_line(fixture: Fixture, tmp_path: Path, value: str):
    line = one_error(make("status", f"WORKERS={value}", f"CONFIG={fixture.config}", f"DATA={tmp_path}", check=False))
    assert f"WORKERS must be a whole number of at least 1, got {value!r}" in line


def test_a_data_path_with_a_quote_is_taken_as_it_is(fixture: Fixture, tmp_path: Path):
    data = tmp_path / "it's data"
    assert f"data: {data}" in make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout


@pytest.mark.parametrize(("text", "said"), [
    ("", "the config file is empty"),
    ("# only a comment\n", "the config file is empty"),
    ("- a\n- b\n", "the config must be a mapping of keys (as in config.yaml), got list"),
    ("data_dir: a\ndata_dir: b\n", "duplicate key 'data_dir' (line 2): give each key once"),
    ("mds:\n  size_limit: 1\n  size_limit: 2\n", "duplicate key 'size_limit' (line 3)"),
])
def test_an_empty_config_a_list_or_a_key_given_twice_is_one_clear_line(tmp_path: Path, text: str, said: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(UserError, match="^" + re.escape(f"{path}: {said}")):
        load_config(path)
