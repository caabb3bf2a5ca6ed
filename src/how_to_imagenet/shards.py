"""MDS shard files read in place: a sample's stored `x` bytes and its `y` without a copy, an open or a read.

streaming's reader opens the shard file and reads it twice for every sample; over a local dataset that is
most of the time of handing the undecoded JPEG on. A `MappedShard` maps the file once and cuts samples out
of it (the layout is in pipeline/mds/README.md: a sample count, the offsets, then each sample as the sizes
of its variable-size columns followed by the columns' bytes in order).
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from typing import Any


class MappedShard:
    """One uncompressed MDS shard of streaming's `shard` (a reader with `column_names`, `column_sizes`,
    `dirname`, `split`, `raw_data`), mapped read-only. `sample(i)` is {"x": memoryview, "y": int} (and with
    `real`, val's "real": list of int)."""

    def __init__(self, shard: Any, real: bool = False) -> None:
        self.real = real
        path = os.path.join(shard.dirname, shard.split or "", shard.raw_data.basename)
        self.path = path
        with open(path, "rb") as f:
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.view = memoryview(self.map)
        names, sizes = list(shard.column_names), list(shard.column_sizes)
        self.variable = sum(1 for s in sizes if not s)  # columns whose size each sample stores
        self.sizes = struct.Struct(f"<{self.variable}I")
        self.columns = [(name, size) for name, size in zip(names, sizes, strict=True)]

    def sample(self, index: int) -> dict[str, Any]:
        begin, end = struct.unpack_from("<2I", self.map, 4 + 4 * index)
        stored = iter(self.sizes.unpack_from(self.map, begin))
        at, out = begin + self.sizes.size, {}
        for name, size in self.columns:
            size = size or next(stored)
            if name == "x":
                out["x"] = self.view[at:at + size]
            elif name == "y":
                out["y"] = int.from_bytes(self.map[at:at + size], "little", signed=True)
            elif name == "real" and self.real:  # val's ReaL labels (JSON)
                out["real"] = json.loads(bytes(self.view[at:at + size]))
            at += size
        if at != end:
            raise ValueError(f"{self.path}: sample {index} is {end - begin} bytes, its columns {at - begin}: the "
                             "shard does not match its index.json; run make check")
        return out


def mappable(shard: Any) -> bool:
    """Whether `shard` can be read in place: uncompressed, with an `x` and an int64 `y` column."""
    encodings = dict(zip(shard.column_names, shard.column_encodings, strict=True))
    return shard.compression is None and "x" in encodings and encodings.get("y") == "int"
