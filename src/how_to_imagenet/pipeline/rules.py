"""The name rules of the two ILSVRC2012 archives: which members are images, and of which class.

- train: an outer tar of 1000 `<wnid>.tar` class tars, each of `<wnid>_<n>.JPEG`;
- val: one flat tar of 50,000 `ILSVRC2012_val_XXXXXXXX.JPEG`, labelled by the shipped ground truth
  (`how_to_imagenet/data/ilsvrc2012_val_labels.txt`).
"""

from __future__ import annotations

import re

from ..labels import class_index, val_wnid
from .console import UserError


def val_label(where: str, name: str) -> str:
    """The ground-truth wnid of a val member; a member with none is an error naming it."""
    wnid = val_wnid(name)
    if wnid is None:
        raise UserError(f"{where}: member {name!r} is not a labelled val image "
                        "(ILSVRC2012_val_XXXXXXXX.JPEG with a line in the val ground truth)")
    return wnid


def check_class_image(where: str, class_tar: str, wnid: str, name: str) -> None:
    """A class tar holds only `<wnid>_<n>.JPEG` files of its own class."""
    if not re.fullmatch(rf"{wnid}_\d+\.JPEG", name):
        raise UserError(f"{where}: member {class_tar}/{name} is not a {wnid}_<n>.JPEG image")




def class_tar(where: str, name: str, seen: set[str]) -> str:
    """The wnid of a member of the outer train tar, which must be `<wnid>.tar` of a known wnid, once."""
    wnid = name.removesuffix(".tar")
    if not name.endswith(".tar") or wnid not in class_index():
        raise UserError(f"{where}: member {name!r} is not a class tar '<wnid>.tar' of a known wnid")
    if wnid in seen:
        raise UserError(f"{where}: member {name} appears more than once")
    seen.add(wnid)
    return wnid
