"""ImageNetMDS: the shards as a PyTorch dataset in three lines.

    from how_to_imagenet import ImageNetMDS, normalize
    train = ImageNetMDS(local="data/mds", split="train", batch_size=256)
    loader = torch.utils.data.DataLoader(train, batch_size=256, num_workers=8, pin_memory=True)
    for images, y in loader:
        x = normalize(images.to("cuda", non_blocking=True))

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

from .gpu import JpegCrops
from .labels import classes as class_table
from .names import dataset, split_folder
from .pipeline.shm import set_up
from .shards import MappedShard, mappable
from .transforms import FastPath, FastTrain, FastVal, raw_bytes, train_transform, val_transform

TRANSFORMS = {"fast": (FastTrain, FastVal), "pil": (train_transform, val_transform),
              "gpu": (lambda: JpegCrops(train=True), lambda: JpegCrops(train=False)),
              "bytes": (lambda: raw_bytes, lambda: raw_bytes)}
TRANSFORMS["standard"] = TRANSFORMS["pil"]  # its name before 0.3, when it was the default


class ImageNetMDS(StreamingDataset):
    """One split of the MDS output: `local` (and/or `remote`) is the folder holding the
    `ILSVRC2012_img_<split>` datasets and the test sets' (DATA/mds). Items are `(transform(image), y)`;
    `split` is train, val or a test set (imagenet-v2-matched-frequency, imagenet-a, ...: the val
    transform), `y` the class index among all 1000 in each. `held` lists the classes the split holds
    (a test set such as imagenet-a: its 200; a scorer restricts the logits to them).

    `transform` is the split's standard augmentation (train: RandomResizedCrop 224 + flip; val: resize 256,
    centre crop 224) done one of three ways: "fast" (the default) decodes only what the crop needs and gives
    uint8 tensors, to be normalised on the device with `how_to_imagenet.normalize`; "pil" is the reference,
    torchvision's transforms on PIL images giving normalised float tensors; "gpu" leaves the decoding to
    the GPU (see `how_to_imagenet.gpu`: the workers only draw the crops); "bytes" gives the JPEG bytes as
    stored (what `ImageNetLoader` decodes in its threads). A callable gets the RGB PIL image; None returns
    that image. ("standard", the default before 0.3, is "pil".)

    `resize=256` reads the `_r256` low-resolution variant. `real=True` (val only) makes items
    `(image, y, real)`, `real` a 1000-long bool tensor of the image's ReaL labels (all False: the image
    counts in no ReaL accuracy). Other keyword arguments go to StreamingDataset (batch_size, shuffle,
    cache_limit, ...); shuffle defaults to split == "train"."""

    def __init__(self, local: str | None = None, remote: str | None = None, split: str = "train",
                 transform: Callable | str | None = "fast", resize: int | None = None, real: bool = False,
                 **kwargs: Any) -> None:
        if isinstance(transform, str):
            if transform not in TRANSFORMS:
                raise ValueError(f"transform={transform!r}: use one of {', '.join(map(repr, TRANSFORMS))}, "
                                 "a callable, or None")
            transform = TRANSFORMS[transform][split != "train"]()
        elif transform is not None and not callable(transform):
            raise TypeError(f"transform={transform!r}: use one of {', '.join(map(repr, TRANSFORMS))}, a callable, "
                            "or None")
        kwargs.setdefault("shuffle", split == "train")
        folder, remote_folder = split_folder(local, split, resize), split_folder(remote, split, resize)
        if remote is None and folder is not None and not (Path(folder) / "index.json").is_file():
            raise FileNotFoundError(f"{folder}: no MDS shards there (no index.json); local= is DATA/mds, the folder "
                                    f"holding {dataset(split, resize)}/ ('make {split}' or 'how-to-imagenet {split}' "
                                    "writes it)")
        set_up(lambda: super(ImageNetMDS, self).__init__(local=folder, remote=remote_folder, **kwargs))
        self.check_local_shards()
        self.transform = transform
        self.undecoded = isinstance(transform, FastPath | JpegCrops) or transform is raw_bytes
        if self.undecoded:  # they take the JPEG bytes: have the shards hand them over as they are stored
            for shard in self.shards:
                shard.column_encodings = ["bytes" if name == "x" else encoding
                                          for name, encoding in zip(shard.column_names, shard.column_encodings,
                                                                    strict=True)]
        self.split = split
        # Local shards whose JPEG bytes are handed on undecoded are read in place (see shards.py), each
        # mapped at its first sample; remote ones go through streaming, which downloads and evicts them.
        self.mapped: dict[int, MappedShard] | None = None
        if self.undecoded and all(s.remote is None for s in self.streams) and all(map(mappable, self.shards)):
            self.mapped = {}
        table = self._classes()
        self.held = [c["index"] for c in table if c.get("images", 1)]  # a test set's classes.json lists its own
        full = table if len(table) == len(class_table({})) else class_table({})
        self.wnids = [c["wnid"] for c in full]
        self.classes = [c["name"] for c in full]
        self.real = real
        if real and "real" not in self.shards[0].column_names:
            raise ValueError(f"real=True: the {split} dataset has no ReaL labels (only val's has, written by this "
                             "version's make mds-val)")

    def check_local_shards(self) -> None:
        """Each shard of a stream with no remote is there with the size index.json gives (a stat each):
        streaming itself reads a truncated or lengthened shard without a word."""
        for shard, stream in zip(self.shards, self.stream_per_shard, strict=True):
            if self.streams[stream].remote is not None:
                continue
            path = Path(shard.dirname, shard.split or "", shard.raw_data.basename)
            size = path.stat().st_size if path.exists() else None
            if size != shard.raw_data.bytes:
                found = "missing" if size is None else f"{size:,} bytes"
                raise ValueError(f"{path}: {found}, its index.json says {shard.raw_data.bytes:,} bytes: the shards "
                                 "are damaged; run make check (it names the shards to rebuild)")

    def _classes(self) -> list[dict]:
        """classes.json from the dataset folder when it is local, else the metadata shipped in the package."""
        path = Path(self.streams[0].local) / "classes.json"
        if path.exists():
            return json.loads(path.read_text())
        return class_table({})

    def get_item(self, sample_id: int, retry: int = 7) -> Any:
        if self.mapped is None:
            return super().get_item(sample_id, retry)
        shard_id, index = self.spanner[sample_id]
        shard = self.mapped.get(shard_id)
        if shard is None:
            try:
                shard = self.mapped[shard_id] = MappedShard(self.shards[shard_id], self.real)
            except FileNotFoundError:
                return super().get_item(sample_id, retry)  # streaming's own error naming the file
        return shard.sample(index)

    def _prepare_thread(self, it: Any) -> None:
        """Streaming's download thread, which prepares each sample's shard in turn (a file lock taken and a
        file looked at per sample): for local shards read in place there is nothing to download, decompress
        or evict."""
        if self.mapped is None:
            return super()._prepare_thread(it)
        it.prepare_index = it.total
        it.on_exit()
        return None

    def _ready_thread(self, it: Any) -> None:
        """Streaming's ready thread, which waits for each sample's shard in turn: local shards read in place
        (each checked when the dataset was made) are all ready at once."""
        if self.mapped is None:
            return super()._ready_thread(it)
        it.ready_index = it.total
        it.on_exit()
        return None

    def __getstate__(self) -> dict[str, Any]:
        """As pickled for a DataLoader worker that is spawned: without the maps, which it makes again."""
        state = self.__dict__.copy()
        if state.get("mapped") is not None:
            state["mapped"] = {}
        return state

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        sample = super().__getitem__(index)
        if self.undecoded:
            x = self.transform(sample["x"])
        else:
            image = sample["x"].convert("RGB")
            x = self.transform(image) if self.transform is not None else image
        if not self.real:
            return x, sample["y"]
        import torch

        mask = torch.zeros(len(self.wnids), dtype=torch.bool)
        mask[list(sample["real"])] = True
        return x, sample["y"], mask
