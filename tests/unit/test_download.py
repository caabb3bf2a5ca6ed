"""download's decisions in-process: asking before a large download."""

from __future__ import annotations

from pathlib import Path

import pytest

from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.stages.download import confirm
from how_to_imagenet.testing.runs import PROJECT


def test_a_large_download_asks_first_only_at_a_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    split = load_config(PROJECT / "config.yaml").split("val")
    tar = tmp_path / split.archive
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    confirm(split, tar, yes=False)  # no terminal: no question
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    confirm(split, tar, yes=True)  # YES=1: no question
    assert asked == []
    with pytest.raises(UserError, match="download cancelled; run with YES=1"):
        confirm(split, tar, yes=False)
    assert asked == [f"Download 6.7 GB (ILSVRC2012_img_val.tar) into {tmp_path}? [y/N] "]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    confirm(split, tar, yes=False)
