"""The library as users install it: a wheel built from the repo (the `installed` fixture), installed
(not editable) into a new virtual environment, used from outside the repo, loads a local dataset with
no classes.json beside the shards (the class metadata is package data); test_training.py's S3 test
reads a remote one with it."""

from __future__ import annotations

from pathlib import Path

from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.runs import copy_data, read_mds, use_installed


def test_the_installed_wheel_loads_a_local_dataset_without_classes_json(installed: Path, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    (Paths(data).mds("val") / "classes.json").unlink()
    ys = [s["y"] for s in read_mds(Paths(built).mds("val"))]
    assert use_installed(installed, Paths(data).mds_root) == f"construction crane {ys}\n"
