"""The tool as users install it: a wheel built from a copy of the repo (the `installed` fixture), installed
(not editable) into a new virtual environment and used from outside the repo: its command runs the whole
pipeline on the fixture with the defaults it ships; its library loads a local dataset with no
classes.json beside the shards (the class metadata is package data); test_training.py's S3 test reads a
remote one with it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.runs import ENV, PROJECT, Fixture, copy_data, one_error, read_mds, use_installed


def test_the_installed_wheel_loads_a_local_dataset_without_classes_json(installed: Path, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    (Paths(data).mds("val") / "classes.json").unlink()
    ys = [s["y"] for s in read_mds(Paths(built).mds("val"))]
    assert use_installed(installed, Paths(data).mds_root) == f"construction crane {ys}\n"


def command(installed: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, run as a user would: from `cwd`, without PYTHONPATH."""
    clean = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    return subprocess.run([str(installed.parent / "how-to-imagenet"), *args], cwd=cwd, capture_output=True,
                          text=True, env=clean)


def test_the_installed_command_runs_the_whole_pipeline_from_outside_the_repo(installed: Path, fixture: Fixture,
                                                                             tmp_path: Path):
    away, data = tmp_path / "away", tmp_path / "imagenet"
    away.mkdir()
    where = ("--config", str(fixture.config), "--data", str(data))
    done = command(installed, "all", "-y", *where, cwd=away)  # real aria2c on the fixture's web seed
    assert done.returncode == 0, done.stderr
    status = command(installed, "status", *where, cwd=away).stdout
    assert "all done: ImageNetMDS(local=" in status and "make" not in status.replace("makes", "")
    rows = [json.loads(line) for line in command(installed, "status", "--json", *where, cwd=away).stdout.splitlines()]
    assert {(r["split"], r["stage"]): r["state"] for r in rows} == {
        (split, stage): "optional" if stage == "untar" else "done" for split in ("train", "val")
        for stage in ("download", "verify", "untar", "mds")}
    mds = next(r for r in rows if (r["split"], r["stage"]) == ("val", "mds"))
    assert mds["images"] == fixture_images(fixture.config, "val") and mds["bytes"] > 0 and mds["seconds"] > 0
    checked = command(installed, "check", *where, cwd=away)
    assert checked.returncode == 0 and "[check val]" in checked.stderr and "OK" in checked.stderr, checked.stderr
    samples = command(installed, "samples", "val", "-n", "2", *where, cwd=away)
    assert samples.returncode == 0 and "samples" in samples.stdout, samples.stderr
    # A usage error: one line, status 2, naming the command's own --help; a failed stage: one line, status 1,
    # its hint the command as the user runs it (not a make target).
    usage = command(installed, "mds", "--workers", "0", *where, cwd=away)
    assert usage.returncode == 2 and one_error(usage).startswith("error: WORKERS must be a whole number")
    assert "'how-to-imagenet mds --help' lists the options" in usage.stderr
    failed = command(installed, "samples", "val", "--config", str(fixture.config), "--data", str(away), cwd=away)
    assert failed.returncode == 1 and "run 'how-to-imagenet mds val'" in one_error(failed), failed.stderr


def fixture_images(config: Path, split: str) -> int:
    return yaml.safe_load(config.read_text())["splits"][split]["images"]


def test_the_wheel_ships_the_repositorys_defaults_byte_for_byte_and_metadata_a_user_can_trust(installed: Path,
                                                                                            tmp_path: Path):
    code = ("import how_to_imagenet, importlib.metadata as m, pathlib, json; "
            "d = pathlib.Path(how_to_imagenet.__file__).parent / 'defaults'; md = m.metadata('how-to-imagenet'); "
            "print(json.dumps({'defaults': str(d), 'version': how_to_imagenet.__version__, 'dist': m.version("
            "'how-to-imagenet'), 'meta': {k: md.get_all(k) for k in ('Summary', 'License-Expression', 'Project-URL',"
            " 'Requires-Python', 'Classifier')}}))")
    clean = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    out = json.loads(subprocess.run([str(installed), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                                    check=True, env=clean).stdout)
    defaults = Path(out["defaults"])
    shipped = sorted(p.relative_to(PROJECT) for name in ("config.yaml", "torrents", "checksums")
                     for p in [PROJECT / name, *(PROJECT / name).rglob("*")] if p.is_file())
    assert sorted(p.relative_to(defaults) for p in defaults.rglob("*") if p.is_file()) == shipped
    for name in shipped:
        assert (defaults / name).read_bytes() == (PROJECT / name).read_bytes(), name
    assert out["version"] == out["dist"] and command(installed, "--version", cwd=tmp_path).stdout.split() == [
        "how-to-imagenet", out["version"]]
    meta = out["meta"]
    assert meta["License-Expression"] == ["Apache-2.0"] and meta["Summary"][0].startswith("ImageNet ILSVRC2012")
    assert meta["Requires-Python"] == [">=3.10"] and len(meta["Project-URL"]) >= 2 and len(meta["Classifier"]) >= 5
    assert (PROJECT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]
