"""Disagreeing proofs are named, never looped: checksum files that disagree about an archive, and
config facts the verified archive contradicts, stop with one line naming what to fix (issue 20)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.config import HASH_FILES
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.runs import Fixture, checked, copy_data, make, one_error


def wrong_line(fixture: Fixture, tmp_path: Path, alg: str, **changes: object) -> tuple[Path, str]:
    """A config whose `alg` checksum line for val is wrong (the other files stay right), and where that line is."""
    sums = tmp_path / f"checksums-{alg}"
    shutil.copytree(fixture.root / "checksums", sums)
    path = sums / HASH_FILES[alg]
    lines = path.read_text().splitlines()
    n = next(k for k, line in enumerate(lines) if line.endswith(archive("val")))
    digest = lines[n].split()[0]
    lines[n] = f"{'f' * len(digest)}  {archive('val')}"
    path.write_text("\n".join(lines) + "\n")
    changes = {"verify.hashes": ["md5", "sha256", "xxh64"], **changes}  # md5 is checked only when asked
    return fixture.variant(f"wrong-{alg}-{len(changes)}", checksums=str(sums), **changes), f"{path}:{n + 1}"


@pytest.mark.parametrize("kind", ["url", "torrent", "file"])
def test_a_wrong_sha256_line_is_named_with_the_lines_that_agree_and_nothing_is_fetched_or_set_aside(
        fixture: Fixture, tmp_path: Path, kind: str):
    source = {"url": fixture.url + archive("val"), "torrent": f"torrents/{archive('val')}.torrent",
              "file": archive("val")}[kind]
    config, where = wrong_line(fixture, tmp_path, "sha256", **{"splits.val.source": source})
    data = tmp_path / "data"
    make("download-val", f"CONFIG={config}", f"DATA={data}")
    tar = Paths(data).tar(archive("val"))
    before = fixture.server.bytes_sent
    for _ in range(3):  # three runs: the same line, no download, no piece check, nothing set aside
        done = make("val", f"CONFIG={config}", f"DATA={data}", check=False)
        line = one_error(done)
        assert "sha256 is " in line and f"but {where} says {'f' * 64}, while md5 and xxh64 match (" in line
        assert "MD5SUMS:" in line and "XXH64SUMS:" in line and "the checksum files disagree" in line
        assert f"fix {where}" in line and "good copy" not in line
        assert "checking its pieces" not in done.stderr and "aria2c" not in done.stderr
    assert fixture.server.bytes_sent == before
    assert tar.read_bytes() == fixture.tar("val").read_bytes() and not Paths(data).aside(tar).exists()


def test_a_config_size_the_downloaded_archive_contradicts_names_the_key_and_downloads_nothing(
        fixture: Fixture, tmp_path: Path):
    config = fixture.variant("http-bytes", **{"splits.val.source": fixture.url + archive("val")})
    data = tmp_path / "data"
    make("download-val", f"CONFIG={config}", f"DATA={data}")
    tar = Paths(data).tar(archive("val"))
    size = tar.stat().st_size
    wrong = fixture.variant("http-bytes-wrong", **{"splits.val.source": fixture.url + archive("val"),
                                                   "splits.val.bytes": size + 512})
    before = fixture.server.bytes_sent
    for _ in range(2):
        line = one_error(make("val", f"CONFIG={wrong}", f"DATA={data}", check=False))
        assert f"{tar} was downloaded in full from splits.val.source with {size} bytes" in line
        assert f"now says {size + 512}: fix splits.val.bytes" in line
    assert fixture.server.bytes_sent == before and tar.stat().st_size == size


def test_an_image_count_the_verified_archive_contradicts_is_the_configs_mistake(fixture: Fixture, built: Path,
                                                                                  tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("images-25", **{"splits.val.images": 25})
    line = one_error(make("verify-val", f"CONFIG={config}", f"DATA={data}", check=False))
    assert "holds 24 images, but splits.val.images" in line and "set splits.val.images to 24" in line
    assert Paths(data).tar(archive("val")).exists()


def test_a_per_class_range_the_archive_contradicts_is_the_configs_mistake_not_the_shards(
        fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("per-class-4", **{"splits.val.per_class": [4, 10]})
    cfg = (f"CONFIG={config}", f"DATA={data}")
    shards = sorted(p.read_bytes() for p in Paths(data).mds("val").glob("*/*.mds"))
    with pytest.raises(UserError) as e:  # `make check-val`, in this process: its error line
        checked(config, data, "val")
    line = str(e.value)
    assert "the config is wrong, not the shards: class " in line and "the archive holds 3 images" in line
    assert "outside splits.val.per_class [4, 10]" in line and "fix that key in the config" in line
    assert "make val" not in line
    status = make("status", *cfg).stdout
    assert "\nval    mds       done " in status and "FAILED (8: the config: class " in status  # not damaged
    assert "[mds val] up to date" in make("val", *cfg).stderr  # nothing to rewrite
    assert sorted(p.read_bytes() for p in Paths(data).mds("val").glob("*/*.mds")) == shards
