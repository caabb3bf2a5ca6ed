"""Nothing deleted that the project did not make: the demo's folder, archives named with a path,
clean outside DATA, and the damaged copies verify sets aside (issue 20)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.layout import DEMO_MARKER, Paths
from how_to_imagenet.testing.runs import PROJECT, Fixture, copy_data, make, one_error


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo", PROJECT / "tools" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_demo_refuses_a_folder_it_did_not_make_and_keeps_every_file(tmp_path: Path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "thesis.tex").write_text("years of work")
    line = one_error(make("demo", f"DEMO={folder}", check=False))
    assert line.startswith(f"error: DEMO={folder}: {folder} is not empty and was not made by make demo")
    assert (folder / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("which", ["/", "home", "repository", "cwd", "above-cwd"])
def test_the_demo_refuses_root_home_the_repository_and_the_current_folder(demo, tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch, which: str):
    home, repo, cwd = tmp_path / "home", tmp_path / "repo", tmp_path / "work" / "here"
    for d in (home, repo, cwd):
        d.mkdir(parents=True)
        (d / "keep.txt").write_text("mine")
    (home / DEMO_MARKER).write_text("")  # even a marker does not make these the demo's
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(demo, "remove", lambda path: pytest.fail(f"removed {path}"))
    folder = {"/": Path("/"), "home": home, "repository": repo, "cwd": Path("."), "above-cwd": Path("..")}[which]
    what = {"/": "is /", "home": "is $HOME", "repository": "is the repository", "cwd": "is the current folder",
            "above-cwd": "holds the current folder"}[which]
    said = re.escape(f"DEMO={folder}: {folder.resolve()} {what}; ")
    with pytest.raises(UserError, match=f"^{said}.*pick a new one"):
        demo.prepare(folder, repository=repo)
    assert all((d / "keep.txt").read_text() == "mine" for d in (home, repo, cwd))


def test_the_demo_empties_only_a_folder_its_marker_names(demo, tmp_path: Path):
    mine = tmp_path / "earlier-demo"
    demo.prepare(mine)
    (mine / "data").mkdir()
    (mine / "data" / "left.txt").write_text("from the last demo")
    assert demo.prepare(mine) == mine and sorted(p.name for p in mine.iterdir()) == [DEMO_MARKER]
    empty, new = tmp_path / "empty", tmp_path / "new" / "demo"
    empty.mkdir()
    assert (demo.prepare(empty) / DEMO_MARKER).is_file() and (demo.prepare(new) / DEMO_MARKER).is_file()
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    with pytest.raises(UserError, match="exists and is not a folder"):
        demo.prepare(a_file)
    assert a_file.read_text() == "mine"


@pytest.mark.parametrize("name", ["/elsewhere/ILSVRC2012_img_val.tar", "../ILSVRC2012_img_val.tar", "tar/x.tar", ".."])
def test_an_archive_named_with_a_path_is_an_error_naming_the_key_and_clean_deletes_nothing(
        fixture: Fixture, tmp_path: Path, name: str):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    own = elsewhere / archive("val")
    own.write_bytes(b"the user's own archive")
    named = name.replace("/elsewhere", str(elsewhere))
    config = fixture.variant(f"path-{abs(hash(name))}", **{"splits.val.archive": named})
    line = one_error(make("clean-val-tar", f"CONFIG={config}", f"DATA={tmp_path / 'data'}", check=False))
    assert "'splits.val.archive' must be a bare file name" in line and "removing" not in line
    assert own.read_bytes() == b"the user's own archive"


def test_clean_removes_nothing_whose_folder_is_outside_data(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    elsewhere = tmp_path / "elsewhere"
    Paths(data).untar("val").rename(elsewhere)  # DATA/untar/ILSVRC2012_img_val -> a folder of the user's
    mds = Paths(data).mds("val")
    (data / "untar").rename(tmp_path / "untar-moved")
    (data / "untar").symlink_to(tmp_path / "untar-moved")
    (tmp_path / "untar-moved" / "ILSVRC2012_img_val").symlink_to(elsewhere)
    line = one_error(make("clean-val", f"CONFIG={fixture.config}", f"DATA={data}", check=False))
    assert "is not under DATA" in line and "nothing was removed" in line
    assert any(elsewhere.rglob("*.JPEG")) and mds.exists()


def test_a_copy_set_aside_is_listed_by_status_with_its_size_and_removed_by_clean_tar(fixture: Fixture, tmp_path: Path):
    data, cfg = tmp_path / "data", f"CONFIG={fixture.config}"
    aside = Paths(data).aside(Paths(data).tar(archive("val")))
    aside.parent.mkdir(parents=True)
    aside.write_bytes(b"\0" * 12345)
    status = make("status", cfg, f"DATA={data}").stdout
    assert f"val: {aside} (12.3 KB) is a damaged copy verify set aside; 'make clean-val-tar' removes it" in status
    make("clean-val", cfg, f"DATA={data}")
    assert aside.exists()  # only clean-val-tar removes archives
    done = make("clean-val-tar", cfg, f"DATA={data}")
    assert f"removing {aside}" in done.stderr and not aside.exists()
    assert "set aside" not in make("status", cfg, f"DATA={data}").stdout
