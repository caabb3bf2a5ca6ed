"""The number_folders layout (ImageNetV2): `<top>/<n>/<file>` in a tar or zip, where the class folder
`n` is the class index 0..999 written without zero-padding ("0", "1", ..., "999"), mapped to its wnid
through the synsets file (`how_to_imagenet/data/ilsvrc2012_synsets.txt`): ImageFolder, which sorts
"10" before "2", would give every class past 1 the wrong label. untar writes wnid folders."""

from __future__ import annotations

from ...labels import wnids
from ..console import UserError
from .folders import ClassFolders


class NumberFolders(ClassFolders):
    name = "number_folders"
    shape = "<top>/<class index 0..999>/<image>"

    def folder_wnid(self, where: str, member: str, folder: str) -> str:
        if not (folder.isascii() and folder.isdigit() and str(int(folder)) == folder and int(folder) < 1000):
            raise UserError(f"{where}: member {member!r}: class folder {folder!r} is not a class index 0..999 "
                            "(ImageNetV2 names its class folders by number, not zero-padded)")
        return wnids()[int(folder)]


LAYOUT = NumberFolders()
