"""Config validation: every mistake is one clear line naming the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from how_to_imagenet.pipeline.cli import READERS, worker_count
from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.testing.runs import PROJECT, make


def write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load((PROJECT / "config.yaml").read_text())
    edit(raw)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_shipped_config_loads_with_paths_relative_to_its_folder():
    cfg = load_config(PROJECT / "config.yaml")
    assert cfg.data_dir == PROJECT / "data" and cfg.checksums == PROJECT / "checksums"
    assert cfg.split("val").bytes == 6744924160 and cfg.split("train").images == 1281167


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: c["mds"].update(shuffle_sed=1), "unknown key 'mds.shuffle_sed'"),
    (lambda c: c.update(dataa="x"), "unknown key 'dataa'"),
    (lambda c: c["splits"]["val"].update(bytes="12"), "'splits.val.bytes' must be int, got str '12'"),
    (lambda c: c["splits"]["val"].update(images=True), "'splits.val.images' must be int, got bool"),
    (lambda c: c.update(aria2c_args="--foo"), "'aria2c_args' must be a list of str"),
    (lambda c: c["splits"].update(test={}), "unknown key 'splits.test'"),
    (lambda c: c["splits"]["val"].update(images=0), "'splits.val.images' must be positive"),
    (lambda c: c["splits"]["val"].update(per_class=[True, True]), "'splits.val.per_class' must be a list of int"),
    (lambda c: c["mds"].update(size_limit=True), "'mds.size_limit' must be int, got bool"),
    (lambda c: c["splits"]["val"].update(archive="/data/ILSVRC2012_img_val.tar"),
     "'splits.val.archive' must be a bare file name"),
    (lambda c: c["splits"]["val"].update(layout="zip_of_folders"),
     "'splits.val.layout' is 'zip_of_folders', not an archive layout this version reads (known: class_tars, "
     "labelled_files, number_folders, wnid_folders)"),
    (lambda c: c["splits"]["val"].update(mirrors=["http://127.0.0.1/x.tar"]),
     "'splits.val.mirrors' are further http(s) URLs of an http(s) source"),
])
def test_a_bad_key_or_type_is_an_error_naming_the_key(tmp_path: Path, edit, message: str):
    with pytest.raises(UserError, match=re.escape(message)):
        load_config(write(tmp_path, edit))


def test_a_user_config_holds_only_the_keys_it_changes_with_paths_relative_to_it(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "mine").mkdir()
    path = tmp_path / "mine" / "config.yaml"
    path.write_text("mds:\n  shuffle_seed: 7\nsplits:\n  val:\n    source: ../tars/ILSVRC2012_img_val.tar\n")
    monkeypatch.chdir(tmp_path)
    cfg, shipped = load_config(path), load_config(PROJECT / "config.yaml")
    assert cfg.shuffle_seed == 7 and cfg.hashes == shipped.hashes and cfg.size_limit == shipped.size_limit
    assert list(cfg.splits) == ["val"] and cfg.split("val").bytes == shipped.split("val").bytes  # the splits named
    assert cfg.split("val").local() == tmp_path / "tars" / "ILSVRC2012_img_val.tar"  # relative to that config
    assert cfg.checksums == shipped.checksums and cfg.data_dir == tmp_path / "data"  # defaults: data in the cwd
    assert load_config(None).splits.keys() == shipped.splits.keys()  # no config: the defaults alone
    assert load_config(None).split("train").local() == shipped.split("train").local()
    path.write_text("mds:\n  shufle_seed: 7\n")
    with pytest.raises(UserError, match=re.escape(f"{path}: unknown key 'mds.shufle_seed'")):
        load_config(path)


def test_make_stops_at_once_with_one_line_on_a_bad_config(tmp_path: Path):
    path = write(tmp_path, lambda c: c["mds"].update(size_limt=1))
    done = make("status", f"CONFIG={path}", check=False)
    assert done.returncode != 0
    assert f"error: {path}: unknown key 'mds.size_limt'" in done.stderr


def test_an_unknown_archive_layout_is_one_error_line_from_make(tmp_path: Path):
    path = write(tmp_path, lambda c: c["splits"]["train"].update(layout="class_folders"))
    done = make("verify-train", f"CONFIG={path}", f"DATA={tmp_path / 'data'}", check=False)
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"error: {path}: 'splits.train.layout' is 'class_folders', not an archive layout")
    assert "Traceback" not in done.stderr


def test_a_missing_config_or_bad_yaml_is_one_clear_line(tmp_path: Path):
    done = make("status", f"CONFIG={tmp_path}/nope.yaml", check=False)
    assert done.returncode != 0 and "nope.yaml" in done.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("splits: [\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(bad)


def test_a_split_left_out_of_the_config_is_a_clear_error(tmp_path: Path):
    cfg = load_config(write(tmp_path, lambda c: c["splits"].pop("train")))
    with pytest.raises(UserError, match=r"no 'splits\.train' section"):
        cfg.split("train")


@pytest.mark.parametrize(("cores", "given", "cpu_bound", "expected"), [
    (16, None, False, READERS),  # full-size mds: a few readers, not one per core
    (16, None, True, 16),  # RESIZE and untar: the cores
    (1, None, False, 1),
    (16, 3, False, 3),  # WORKERS=3 is taken as given
])
def test_workers_default_to_what_the_work_is_bound_by(monkeypatch: pytest.MonkeyPatch, cores: int, given: int | None,
                                                      cpu_bound: bool, expected: int):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)))
    assert worker_count(given, cpu_bound) == expected
