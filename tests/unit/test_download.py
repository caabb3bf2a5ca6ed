"""The question before a large download, in-process: asked only at a terminal, naming what a user
needs to decide; "no" ends the run quietly."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import Declined
from how_to_imagenet.pipeline.context import Context, Options
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.stage import registry
from how_to_imagenet.pipeline.up_front import confirm_downloads
from how_to_imagenet.testing.runs import PROJECT


def test_a_large_download_asks_first_only_at_a_terminal_naming_source_sizes_space_and_terms(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    cfg = load_config(PROJECT / "config.yaml")
    steps = [(s, cfg.split("val")) for s in registry() if not s.optional]
    asked, said = [], []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    confirm_downloads(Context(cfg, Paths(tmp_path)), "val", steps)  # no terminal: no question
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    confirm_downloads(Context(cfg, Paths(tmp_path), Options(yes=True)), "val", steps)  # --yes: no question
    assert asked == []
    monkeypatch.setattr("how_to_imagenet.pipeline.up_front.print", lambda *a, **k: said.append(" ".join(a)),
                        raising=False)
    with pytest.raises(Declined, match=r"nothing was downloaded \(--yes skips this question\)"):
        confirm_downloads(Context(cfg, Paths(tmp_path)), "val", steps)
    text = "\n".join(said)
    assert asked == ["Download? [y/N] "]
    assert "ILSVRC2012_img_val.tar (6.7 GB) from torrents/ILSVRC2012_img_val.tar.torrent" in text
    assert "about 13.5 GB written in all" in text and " free there" in text and "image-net.org" in text
    with pytest.raises(Declined, match=r"YES=1 skips"):  # under make, the hint is make's
        confirm_downloads(Context(cfg, Paths(tmp_path), make=True), "val", steps)
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    confirm_downloads(Context(cfg, Paths(tmp_path)), "val", steps)


def test_an_archive_removed_after_verify_is_asked_about_only_when_it_is_fetched_again(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from how_to_imagenet.pipeline.stages import download

    cfg = load_config(PROJECT / "config.yaml")
    stage = next(s for s in registry() if s.name == "download")
    monkeypatch.setattr(type(stage), "state", lambda self, ctx, split: SimpleNamespace(name="removed"))
    monkeypatch.setattr(download, "removed", lambda paths, split: True)  # deleted after verify, as status says
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("how_to_imagenet.pipeline.up_front.print", lambda *a, **k: None, raising=False)
    steps = [(stage, cfg.split("val"))]
    confirm_downloads(Context(cfg, Paths(tmp_path)), "val", steps)  # not fetched again: nothing to ask
    assert asked == []
    with pytest.raises(Declined):
        confirm_downloads(Context(cfg, Paths(tmp_path), Options(fetch=True)), "val", steps)  # --fetch: asked
    assert asked == ["Download? [y/N] "]
