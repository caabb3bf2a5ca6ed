"""How to ImageNet: ILSVRC2012 as MDS shards for PyTorch, and the dataset that reads them.

    from how_to_imagenet import ImageNetLoader
    for images, y in ImageNetLoader(local="data/mds", split="train", batch_size=256, normalize=True): ...

    from how_to_imagenet import ImageNetMDS, normalize      # the same shards as a StreamingDataset
    train = ImageNetMDS(local="data/mds", split="train", batch_size=256)   # uint8 crops: the fast path
    ... x = normalize(images.to("cuda", non_blocking=True))

    from how_to_imagenet import evaluate                    # val, ReaL, ImageNetV2, -A, -R, -Sketch: one table
    evaluate(model, local="data/mds", device="cuda")

The pipeline that makes the shards is the command `how-to-imagenet` (`python -m how_to_imagenet`).
The public surface is `__all__`, and the module `how_to_imagenet.gpu` (decoding on the GPU).
`ImageNetLoader`, `ImageNetMDS` and the transforms import streaming and torch, so they are loaded on first use:
`import how_to_imagenet` (and the pipeline stages under `how_to_imagenet.pipeline`) stay fast.
"""

from __future__ import annotations

from typing import Any

from .labels import class_index, class_name, classes, val_wnid, wnids
from .names import dataset

__version__ = "0.4.0"
__all__ = ["MEAN", "STD", "FastTrain", "FastVal", "ImageNetLoader", "ImageNetMDS", "class_index", "class_name",
           "classes", "dataset", "evaluate", "normalize", "train_transform", "val_transform", "val_wnid", "wnids"]
_TRANSFORMS = ("FastTrain", "FastVal", "MEAN", "STD", "normalize", "train_transform", "val_transform")
_LAZY = {"ImageNetLoader": "batches", "ImageNetMDS": "loader", "evaluate": "scoring",
         **dict.fromkeys(_TRANSFORMS, "transforms")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'how_to_imagenet' has no attribute {name!r}")
