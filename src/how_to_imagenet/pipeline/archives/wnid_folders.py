"""The wnid_folders layout (ImageNet-A, -R, -Sketch): `<top>/<wnid>/<file>` in a tar or zip, each
class folder named by one of the 1000 wnids, and (A and R) a README.txt beside them. A set may hold
only some of the classes (A and R: 200): `y` is still the wnid's index among all 1000, and the
dataset's classes.json lists the classes it holds."""

from __future__ import annotations

from ...labels import class_index
from ..console import UserError
from .folders import ClassFolders


class WnidFolders(ClassFolders):
    name = "wnid_folders"
    shape = "<top>/<wnid>/<image>"
    top_files = ("README.txt",)  # ImageNet-A and -R ship one beside their class folders

    def folder_wnid(self, where: str, member: str, folder: str) -> str:
        if folder not in class_index():
            raise UserError(f"{where}: member {member!r}: class folder {folder!r} is not one of the 1000 ILSVRC2012 "
                            "wnids")
        return folder


LAYOUT = WnidFolders()
