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


REAL = "imagenet_real_labels.json"  # the ReaL labels of the val images (data/SOURCES.md)
REAL_SHA256 = "d83e9bff374c631aae8439eb064c7019acc56e1b3bc3f56b8380c2a710b0220b"  # its bytes, as shipped


def read_real(path: Path) -> list[list[int]]:
    """The ReaL labels in `path`: entry i is the list of class indices of ILSVRC2012_val_{i+1:08d}.JPEG
    (empty: the image counts in no ReaL accuracy). Anything else is a ValueError naming the file and
    the entry."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(data, list) or len(data) != len(val_labels()):
        got = f"{len(data)} entries" if isinstance(data, list) else f"a JSON {type(data).__name__}"
        raise ValueError(f"{path}: {got}, not a list of the {len(val_labels())} val images' label lists")
    for i, entry in enumerate(data):
        if not isinstance(entry, list) or not all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < 1000 for c in entry):
            raise ValueError(f"{path}: entry {i} (ILSVRC2012_val_{i + 1:08d}.JPEG) is {json.dumps(entry)[:60]}, not a "
                             "list of class indices 0..999")
    return data


@cache
def real_labels() -> list[list[int]]:
    """The shipped ReaL labels (Beyer et al. 2020), checked by `read_real`."""
    return read_real(DATA / REAL)


def real(file_name: str, labels: list[list[int]] | None = None) -> list[int] | None:
    """The ReaL labels of a val file, by its name (entry i+1 of the list is ILSVRC2012_val_{i+1:08d}: not
    the published example's off-by-one); None if the name is not a val image's."""
    m = VAL_NAME.fullmatch(file_name)
    labels = real_labels() if labels is None else labels
    return labels[int(m.group(1)) - 1] if m and 1 <= int(m.group(1)) <= len(labels) else None


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
