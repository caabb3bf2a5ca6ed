"""The 1000 ILSVRC2012 classes and the val ground truth, from the package data in `data/` (provenance:
`data/SOURCES.md`), so an installed wheel has them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

DATA = Path(__file__).with_name("data")
VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})\.JPEG")
WNID = re.compile(r"n\d{8}")


@cache
def synsets() -> dict[str, str]:
    """wnid -> WordNet names, in class-index order."""
    rows = [line.split("\t", 1) for line in (DATA / "ilsvrc2012_synsets.txt").read_text().splitlines()]
    return {wnid: names for wnid, names in rows}


@cache
def wnids() -> list[str]:
    """All 1000 wnids sorted: the position of a wnid is its class index `y` (torchvision's order)."""
    out = sorted(synsets())
    assert len(out) == 1000 and out == list(synsets()), "data/ilsvrc2012_synsets.txt is not the sorted 1000 wnids"
    return out


@cache
def class_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids())}


@cache
def val_labels() -> list[str]:
    """Line i is the wnid of ILSVRC2012_val_{i+1:08d}.JPEG."""
    return (DATA / "ilsvrc2012_val_labels.txt").read_text().split()


def val_wnid(file_name: str) -> str | None:
    """The ground-truth wnid of a val file name, or None if the name has no label."""
    m = VAL_NAME.fullmatch(file_name)
    if not m:
        return None
    i = int(m.group(1))
    labels = val_labels()
    return labels[i - 1] if 1 <= i <= len(labels) else None


# The first WordNet names are not unique: torchvision (prototype datasets) renames these two.
RENAMED = {"n03126707": "construction crane", "n03710721": "tank suit"}


@cache
def short_names() -> list[str]:
    """A short, unique, human-friendly name per class index (imagenet-simple-labels)."""
    return json.loads((DATA / "imagenet_simple_labels.json").read_text())


def class_name(wnid: str) -> str:
    """The first WordNet name, made unique."""
    return RENAMED.get(wnid, synsets()[wnid].split(", ")[0])


def classes(counts: Mapping[str, int], held: bool = False) -> list[dict]:
    """classes.json: every class with its index, wnid, a unique name, the WordNet names, a short
    name, and how many images of it the split holds. `held` (a test set's): only the classes the split
    holds, each with `y` (its index): the mask a scorer restricts the 1000 logits to."""
    return [{**({"y": i} if held else {}), "index": i, "wnid": w, "name": class_name(w),
             "wordnet": synsets()[w], "short": short_names()[i], "images": counts.get(w, 0)}
            for i, w in enumerate(wnids()) if not held or counts.get(w)]
