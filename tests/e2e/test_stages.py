"""Each stage on its own: status at every step, verify failures, sources, clean, and the loopback guard."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.layout import Paths, partial
from how_to_imagenet.testing.runs import ENV, PROJECT, Fixture, copy_data, make
from how_to_imagenet.testing.runs import stage as run_stage
from how_to_imagenet.testing.runs import states as status


def test_status_shows_every_state_step_by_step(fixture: Fixture, tmp_path: Path):
    data, cfg = tmp_path / "data", fixture.config
    states = status(cfg, data)
    assert {st for (_, stage), st in states.items() if stage != "untar"} == {"missing"} and len(states) == 8
    assert states[("val", "untar")] == states[("train", "untar")] == "optional"  # not needed for the shards
    assert "next: make val (" in make("status", f"CONFIG={cfg}", f"DATA={data}").stdout  # the small split first
    expected = {"download": "missing", "verify": "missing", "untar": "optional", "mds": "missing"}
    for stage in ("download", "verify", "untar", "mds"):
        make(f"{stage}-val", f"CONFIG={cfg}", f"DATA={data}")
        expected[stage] = "done"
        states = status(cfg, data)
        assert {s: states[("val", s)] for s in expected} == expected
        assert all(states[("train", s)] == ("optional" if s == "untar" else "missing") for s in expected)
    # A stage killed mid-way leaves `<out>.partial`; status calls it partial, never done.
    make("clean-val", f"CONFIG={cfg}", f"DATA={data}")
    partial(Paths(data).untar("val")).mkdir(parents=True)
    states = status(cfg, data)
    assert [states[("val", s)] for s in ("verify", "untar", "mds")] == ["done", "partial", "missing"]
    # An interrupted download keeps aria2c's control file: partial too.
    (Paths(data).tar(archive("train"))).write_bytes(b"\0" * 10)
    Paths(data).control(Paths(data).tar(archive("train"))).write_bytes(b"x")
    assert status(cfg, data)[("train", "download")] == "partial"


MD5_TOO = {"verify.hashes": ["md5", "sha256", "xxh64"]}  # md5 is checked only when asked


def bad_md5(fixture: Fixture, tmp_path: Path, **changes: object) -> tuple[Path, str]:
    """A config whose MD5SUMS line for val is zeros (sha256 and xxh64 stay right), and that line."""
    sums = tmp_path / "bad-checksums"
    shutil.copytree(fixture.root / "checksums", sums)
    lines = (sums / "MD5SUMS").read_text().splitlines()
    n = next(k for k, line in enumerate(lines) if line.endswith(archive("val")))
    lines[n] = "0" * 32 + "  " + archive("val")
    (sums / "MD5SUMS").write_text("\n".join(lines) + "\n")
    return (fixture.variant("bad-md5", checksums=str(sums), **{**MD5_TOO, **changes}),
            f"{sums / 'MD5SUMS'}:{n + 1}")


def test_a_wrong_checksum_entry_is_named_and_nothing_is_downloaded_again(fixture: Fixture, built: Path,
                                                                         tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config, where = bad_md5(fixture, tmp_path)
    before = fixture.server.bytes_sent
    for _ in range(3):  # three runs: no download, no copy set aside, the same one line
        done = make("val", f"CONFIG={config}", f"DATA={data}", check=False)
        line = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
        assert done.returncode != 0 and len(line) == 1 and "Traceback" not in done.stderr
        assert f"md5 is {built_md5(built)}, but {where} says {'0' * 32}, while sha256 and xxh64 match" in line[0]
        assert "probably a wrong checksum entry" in line[0]
        assert "pipeline mds" not in done.stdout and "mds val" not in done.stdout  # nothing downstream ran
    assert fixture.server.bytes_sent == before
    assert not Paths(data).stamp("val", "verify").exists() and Paths(data).tar(archive("val")).exists()
    assert not Paths(data).aside(Paths(data).tar(archive("val"))).exists()


def test_a_wrong_only_checksum_is_named_once_the_torrent_vouches_for_every_piece(fixture: Fixture, built: Path,
                                                                                 tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config, where = bad_md5(fixture, tmp_path)
    for name in ("SHA256SUMS", "XXH64SUMS"):
        (Path(where.rsplit(":", 1)[0]).parent / name).unlink()  # md5 is the only hash listed
    done = make("val", f"CONFIG={config}", f"DATA={data}", check=False)
    assert done.returncode != 0 and "checking its pieces against ILSVRC2012_img_val.tar.torrent" in done.stderr
    assert f"matches every piece of its torrent, but its md5 is {built_md5(built)} where {where} says" in done.stderr
    assert "the torrent and the checksum files describe different archives" in done.stderr
    assert not Paths(data).aside(Paths(data).tar(archive("val"))).exists()
    again = make("val", f"CONFIG={config}", f"DATA={data}", check=False)  # the same verdict, without a read
    assert "the torrent and the checksum files describe different archives" in again.stderr
    assert "checking its pieces" not in again.stderr and "verify val:" not in again.stderr


def built_md5(built: Path) -> str:
    return hashlib.md5(Paths(built).tar(archive("val")).read_bytes()).hexdigest()


def test_a_tar_of_the_wrong_size_fails_verify_with_expected_and_actual(fixture: Fixture, tmp_path: Path):
    config = fixture.variant("http-size", **{"splits.val.source": fixture.url + archive("val")})  # no pieces to mend
    data = tmp_path / "data"
    make("download-val", f"CONFIG={config}", f"DATA={data}")
    tar = Paths(data).tar(archive("val"))
    size = tar.stat().st_size
    with open(tar, "r+b") as f:
        f.truncate(size - 512)
    # The verify stage on its own: `make verify-val` would first have download resume the short file.
    done = run_stage("verify", f"--config={config}", f"--data={data}", "val")
    assert done.returncode != 0
    assert f"wrong size: expected {size} bytes, actual {size - 512}" in done.stderr
    assert not (Paths(data).stamp("val", "verify")).exists()
    # A good copy put in its place is accepted.
    shutil.copy(fixture.tar("val"), tar)
    make("verify-val", f"CONFIG={config}", f"DATA={data}")
    assert Paths(data).aside(Paths(data).tar(archive("val"))).stat().st_size == size - 512


def test_an_http_source_downloads_through_aria2c(fixture: Fixture, tmp_path: Path):
    config = fixture.variant("http", **{"splits.val.source": fixture.url + "ILSVRC2012_img_val.tar"})
    data = tmp_path / "data"
    make("verify-val", f"CONFIG={config}", f"DATA={data}")
    tar = Paths(data).tar(archive("val"))
    assert not tar.is_symlink() and tar.read_bytes() == (fixture.tar("val")).read_bytes()


def test_a_local_file_source_is_linked_not_copied(fixture: Fixture, tmp_path: Path):
    config = fixture.variant("local", **{"splits.val.source": "ILSVRC2012_img_val.tar"})
    data = tmp_path / "data"
    make("verify-val", f"CONFIG={config}", f"DATA={data}")
    assert (Paths(data).tar(archive("val"))).resolve() == fixture.tar("val")


def test_a_complete_tar_is_not_downloaded_again(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    (Paths(data).stamp("val", "download")).unlink()
    done = make("download-val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert "already complete; not downloading it again" in done.stderr
    assert "aria2c -c" not in done.stderr


def test_an_image_count_that_differs_from_the_config_fails_untar(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    config = fixture.variant("wrong-count", **{"splits.val.images": 25})
    done = make("untar-val", f"CONFIG={config}", f"DATA={data}", check=False)
    assert done.returncode != 0
    assert "holds 24 images, but splits.val.images" in done.stderr and "says 25" in done.stderr
    assert not partial(Paths(data).untar("val")).exists()


def test_not_enough_disk_stops_download_with_required_and_available(fixture: Fixture, tmp_path: Path):
    done = make("download-val", f"CONFIG={fixture.config}", f"DATA={tmp_path}", check=False,
                env={"IMAGENET_FREE_BYTES": "1000"})
    assert done.returncode != 0
    assert "not enough free disk" in done.stderr and "available 1.0 KB" in done.stderr
    assert not (Paths(tmp_path).tar(archive("val"))).exists()


def test_clean_removes_outputs_and_stamps_but_keeps_the_tar(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    make("clean-val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert not (Paths(data).untar("val")).exists() and not (Paths(data).mds("val")).exists()
    assert sorted(p.name for p in Paths(data).stamps.iterdir() if p.name.startswith("val.")) == [
        "val.download", "val.verify"]
    assert (Paths(data).tar(archive("val"))).exists() and (Paths(data).mds("train")).exists()
    make("clean-val-tar", f"CONFIG={fixture.config}", f"DATA={data}")
    assert not (Paths(data).tar(archive("val"))).exists()
    assert not any(p.name.startswith("val.") for p in Paths(data).stamps.iterdir())
    make("val", f"CONFIG={fixture.config}", f"DATA={data}")  # and it all comes back


def test_clean_removes_a_resize_variant_left_partial_by_a_killed_run(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    left = partial(Paths(data).mds("val", 64))  # what a SIGKILL in `make mds-val RESIZE=64` leaves
    (left / "00000").mkdir(parents=True)
    assert "val    mds_r64   partial" in make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    make("clean-val", f"CONFIG={fixture.config}", f"DATA={data}")
    assert not left.exists()


def test_the_real_imagenet_torrents_are_refused_in_loopback_only_mode(tmp_path: Path):
    # PATH without aria2c too: even a broken guard could not reach the network from here.
    env = {**ENV, "PATH": str(Path(sys.executable).parent)}
    for split in ("train", "val"):
        done = run_stage("download", "--data", str(tmp_path), split, env=env)
        assert done.returncode == 1
        assert "IMAGENET_LOOPBACK_ONLY=1 but splits" in done.stderr and "academictorrents.com" in done.stderr


@pytest.mark.parametrize("source", ["magnet:?xt=urn:btih:5d6d0df7ed81efd49ca99ea4737e0ae5e3a5f2e5",
                                    "https://example.org/ILSVRC2012_img_val.tar"])
def test_non_loopback_sources_are_refused_in_loopback_only_mode(fixture: Fixture, tmp_path: Path, source: str):
    config = fixture.variant("remote", **{"splits.val.source": source})
    done = make("download-val", f"CONFIG={config}", f"DATA={tmp_path}", check=False)
    assert done.returncode != 0 and "IMAGENET_LOOPBACK_ONLY=1" in done.stderr


def test_each_recipe_prints_one_short_line_and_v1_prints_the_full_commands(fixture: Fixture, built: Path,
                                                                           tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    where = (f"CONFIG={fixture.config}", f"DATA={data}")
    assert make("verify-val", *where).stdout.splitlines() == ["download val", "verify val"]
    loud = make("verify-val", "V=1", *where).stdout.splitlines()
    assert len(loud) == 2 and "-m how_to_imagenet download" in loud[0] and loud[0].endswith(" val")
    assert "-m how_to_imagenet verify" in loud[1] and "--var 'WORKERS='" in loud[1]


def test_help_is_the_default_goal_and_lists_every_target_and_variable():
    out = make().stdout
    for target in ("all", "evals", "train", "val", "download-SPLIT", "verify-SPLIT", "untar-SPLIT", "mds-SPLIT",
                   "status", "clean-SPLIT", "clean-SPLIT-tar", "demo", "test", "samples-SPLIT", "aria2c", "venv",
                   "lint"):
        assert f" {target} " in out.replace("\n", " \n"), target
    for var in ("DATA", "CONFIG", "YES", "TORCH", "VENV"):
        assert f"  {var} " in out


def test_shipped_label_files_and_torrents_match_their_pinned_sha256():
    done = subprocess.run(["sha256sum", "-c", "checksums/META.SHA256SUMS"], cwd=PROJECT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_local_source_already_in_the_data_folder_is_kept(fixture: Fixture, tmp_path: Path):
    data = tmp_path / "data"
    tar = Paths(data).tar(archive("val"))
    tar.parent.mkdir(parents=True)
    shutil.copy(fixture.tar("val"), tar)
    config = fixture.variant("in-place", **{"splits.val.source": str(tar)})
    make("verify-val", f"CONFIG={config}", f"DATA={data}")
    assert not tar.is_symlink() and tar.read_bytes() == (fixture.tar("val")).read_bytes()


def test_a_checksum_file_removed_or_in_binary_mode_is_fine(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    sums = tmp_path / "sums"
    shutil.copytree(fixture.root / "checksums", sums)
    (sums / "XXH64SUMS").unlink()
    md5 = (sums / "MD5SUMS").read_text()
    (sums / "MD5SUMS").write_text(md5.replace("  ILSVRC", " *ILSVRC"))  # md5sum -b writes this
    config = fixture.variant("two-sums", checksums=str(sums), **MD5_TOO)
    done = make("verify-val", f"CONFIG={config}", f"DATA={data}")
    assert "md5, sha256 OK" in done.stderr
    (sums / "SHA256SUMS").unlink()
    make("verify-val", f"CONFIG={config}", f"DATA={data}")  # a file gone is no missing prerequisite
    (Paths(data).stamp("val", "verify")).unlink()
    assert "md5 OK" in make("verify-val", f"CONFIG={config}", f"DATA={data}").stderr
