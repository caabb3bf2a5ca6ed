"""From a downloaded archive to shards in one read (issue 23): when make's goal is a split's shards,
verify goes on to mds in the same read of the archive. The shards are byte for byte those of mds
run after verify, nothing is shown as done before the whole-archive hashes pass, and an archive
that fails them leaves exactly what a failed verify leaves."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.context import Context, Options
from how_to_imagenet.pipeline.hashing import Ring
from how_to_imagenet.pipeline.index import read_index
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.pipeline.stage import stage
from how_to_imagenet.pipeline.stages import one_read
from how_to_imagenet.testing.runs import Fixture, checked, copy_data, make, mds_files, one_error


def unverified(built: Path, data: Path) -> Path:
    """A copy of `built` as download leaves it: the archives, and no index, dataset or stamp after download's."""
    copy_data(built, data)
    paths = Paths(data)
    for split in ("train", "val"):
        for name in paths.stamped(split):
            if name != "download":
                paths.stamp(split, name).unlink()
        paths.index(split).unlink()
        shutil.rmtree(paths.mds(split))
        shutil.rmtree(paths.untar(split))
    return data


def test_make_all_writes_the_shards_during_verifys_read_byte_for_byte_as_mds_after_verify(
        fixture: Fixture, built: Path, tmp_path: Path):
    where = (f"CONFIG={fixture.config}",)
    one = unverified(built, tmp_path / "one")
    done = make("all", *where, f"DATA={one}")
    for split in ("train", "val"):
        assert f"[mds {split}] " in done.stderr and "images written during verify's read" in done.stderr
        assert f"[mds {split}] up to date" in done.stderr  # make's mds step found them done by verify's
    two = unverified(built, tmp_path / "two")
    make("verify-train", "verify-val", *where, f"DATA={two}")
    apart = make("mds-train", "mds-val", *where, f"DATA={two}")
    assert "[mds val] done" in apart.stderr and "during verify's read" not in apart.stderr
    for split in ("train", "val"):
        assert mds_files(Paths(one).mds(split)) == mds_files(Paths(two).mds(split))
        assert Paths(one).index(split).read_bytes() == Paths(two).index(split).read_bytes()
    checked(fixture.config, one, "train", "val")


def test_make_verify_alone_writes_no_shards(fixture: Fixture, built: Path, tmp_path: Path):
    data = unverified(built, tmp_path / "data")
    done = make("verify-val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert "written during verify" not in done.stderr and not Paths(data).mds("val").exists()


def test_nothing_is_visible_as_done_before_the_whole_archive_hashes_pass(
        fixture: Fixture, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    data = unverified(built, tmp_path / "data")
    paths, seen = Paths(data), []
    digests = Ring.digests

    def at_the_verdict(self: Ring) -> dict[str, str]:
        """What is on disk when verify waits for the hashes, the shards already written."""
        seen.append({"partial shards": len(list(partial(paths.mds("val")).glob("*/*.mds"))),
                     "dataset": paths.mds("val").exists(), "index": paths.index("val").exists(),
                     "stamps": paths.stamped("val")})
        return digests(self)

    monkeypatch.setattr(Ring, "digests", at_the_verdict)
    ctx = Context(load_config(fixture.config), paths, Options(then_mds=True, workers=2))
    stage("verify").bring_up_to_date(ctx, ctx.cfg.split("val"))
    assert seen == [{"partial shards": 2, "dataset": False, "index": False, "stamps": ["download"]}]
    assert set(paths.stamped("val")) == {"download", "verify", "mds"} and not partial(paths.mds("val")).exists()
    assert mds_files(paths.mds("val")) == mds_files(Paths(built).mds("val"))


def test_an_archive_that_fails_its_hashes_during_make_val_leaves_what_a_failed_verify_leaves(
        fixture: Fixture, built: Path, tmp_path: Path):
    config = fixture.variant("one-read-http", **{"splits.val.source": fixture.url + archive("val")})  # no repair
    image = read_index(Paths(built).index("val"))[3]  # a byte inside an image: every header still reads
    left = {}
    for goal in ("val", "verify-val"):
        data = tmp_path / goal
        make("download-val", f"CONFIG={config}", f"DATA={data}")
        tar = Paths(data).tar(archive("val"))
        raw = bytearray(tar.read_bytes())
        raw[image.offset + image.size // 2] ^= 0xFF
        tar.write_bytes(raw)
        done = make(goal, f"CONFIG={config}", f"DATA={data}", check=False)
        assert "sha256 mismatch" in one_error(done) and "moved aside" in one_error(done)
        assert ("images written during verify's read" in done.stderr) == (goal == "val")  # the shards were begun
        left[goal] = sorted(str(p.relative_to(data)) for p in data.rglob("*") if ".lock" not in p.name)
    assert left["val"] == left["verify-val"]
    assert not [p for p in left["val"] if "mds" in p or "index" in p]


def test_md5_is_checked_only_when_asked(fixture: Fixture, built: Path, tmp_path: Path):
    data = unverified(built, tmp_path / "data")
    sums = tmp_path / "sums"
    shutil.copytree(fixture.root / "checksums", sums)
    md5 = sums / "MD5SUMS"
    md5.write_text("".join(("0" * 32 + line[32:]) if line.endswith(f"{archive('val')}\n") else line
                           for line in md5.read_text().splitlines(keepends=True)))
    config = fixture.variant("md5-zeros", checksums=str(sums))
    done = make("verify-val", f"CONFIG={config}", f"DATA={data}")  # the wrong md5 line is never read
    assert "sha256, xxh64 OK" in done.stderr and "md5 is" not in done.stderr
    asked = make("verify-val", f"CONFIG={config}", f"DATA={data}", "HASHES=md5 sha256 xxh64", check=False)
    assert "md5 is " in one_error(asked) and "while sha256 and xxh64 match" in one_error(asked)  # verified again
    assert "HASHES has 'sha1', not a hash verify checks (known: md5, sha256, xxh64)" in one_error(
        make("verify-val", f"CONFIG={config}", f"DATA={data}", "HASHES=sha1", check=False))
    bad = fixture.variant("verify-hashes-empty", **{"verify.hashes": []})
    assert "verify.hashes names no hash" in one_error(make("status", f"CONFIG={bad}", f"DATA={data}", check=False))


def test_mds_failing_during_verifys_read_leaves_verify_done_and_mds_to_run_on_its_own(
        fixture: Fixture, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]):
    data = unverified(built, tmp_path / "data")
    paths = Paths(data)

    def full(*_: object) -> None:
        raise OSError(28, "No space left on device", str(partial(paths.mds("val"))))

    monkeypatch.setattr(one_read, "convert", full)
    ctx = Context(load_config(fixture.config), paths, Options(then_mds=True))
    stage("verify").bring_up_to_date(ctx, ctx.cfg.split("val"))
    assert "[mds val] not written during verify (" in capsys.readouterr().err
    assert paths.stamped("val") == ["download", "verify"] and paths.index("val").exists()
    assert not [p for p in paths.mds_root.iterdir() if "_val" in p.name]  # no dataset, no .partial
