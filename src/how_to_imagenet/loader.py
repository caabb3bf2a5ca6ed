"""ImageNetMDS: the shards as a PyTorch dataset in three lines.

    from how_to_imagenet import ImageNetMDS
    train = ImageNetMDS(local="data/mds", split="train", batch_size=256)
    loader = torch.utils.data.DataLoader(train, batch_size=256, num_workers=8)

A streaming.StreamingDataset subclass returning (image, y), so everything streaming offers works:
several DataLoader workers, several ranks and nodes (it reads RANK, WORLD_SIZE, LOCAL_WORLD_SIZE),
and a remote store (remote="s3://bucket/imagenet/mds", with local= a cache folder).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streaming import StreamingDataset

from .labels import classes as class_table
from .names import split_folder

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train_transform(size: int = 224) -> Callable:
    """The standard ImageNet training augmentation: random-resized crop and horizontal flip."""
    from torchvision import transforms

    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def val_transform(size: int = 224, resize: int = 256) -> Callable:
    """The standard ImageNet evaluation: resize the short side to 256, centre-crop 224."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(size),
                               transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


class ImageNetMDS(StreamingDataset):
    """One split of the MDS output: `local` (and/or `remote`) is the folder holding the
    `ILSVRC2012_img_<split>` datasets (DATA/mds). Items are `(transform(image), y)`, the image
    converted to RGB first. `transform` defaults to the standard one for the split; pass None for
    the PIL image. `resize=256` reads the `_r256` low-resolution variant. Other keyword arguments go
    to StreamingDataset (batch_size, shuffle, cache_limit, ...); shuffle defaults to split == "train"."""

    def __init__(self, local: str | None = None, remote: str | None = None, split: str = "train",
                 transform: Callable | str | None = "standard", resize: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("shuffle", split == "train")
        super().__init__(local=split_folder(local, split, resize), remote=split_folder(remote, split, resize),
                         **kwargs)
        if transform == "standard":
            transform = train_transform() if split == "train" else val_transform()
        self.transform = transform
        self.split = split
        table = self._classes()
        self.wnids = [c["wnid"] for c in table]
        self.classes = [c["name"] for c in table]

    def _classes(self) -> list[dict]:
        """classes.json from the dataset folder when it is local, else the metadata shipped in the package."""
        path = Path(self.streams[0].local) / "classes.json"
        if path.exists():
            return json.loads(path.read_text())
        return class_table({})

    def __getitem__(self, index: int) -> tuple[Any, int]:
        sample = super().__getitem__(index)
        image = sample["x"].convert("RGB")
        return (self.transform(image) if self.transform is not None else image), sample["y"]
