"""Which samples each worker writes, in which order: the "which items" half of the conversion (what
each item becomes is `images.stored`).

val keeps ImageFolder order (class, then file name); train is a permutation of that order drawn from
mds.shuffle_seed. WORKERS processes each write a contiguous part of the order into a sub-folder
`<k:05d>/`, and the parts' indexes are merged in order, so the samples, their order and their bytes
are the same for any number of workers.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from ..index import Image

COLUMNS = {"x": "jpeg", "y": "int", "wnid": "str"}
REAL_COLUMN = {"real": "json"}  # val's too: each image's ReaL labels (a list of class indices, maybe empty)


def permutation(n: int, seed: int) -> list[int]:
    """Fisher-Yates driven only by random.random(), whose sequence for a seed Python keeps stable
    across versions (random.shuffle's is not promised), so a seed gives the same order everywhere."""
    rng = random.Random(seed)
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def partitions(n: int, parts: int) -> list[range]:
    """`parts` contiguous, near-equal ranges covering 0..n-1 (none empty)."""
    parts = max(1, min(parts, n))
    bounds = [n * k // parts for k in range(parts + 1)]
    return [range(a, b) for a, b in itertools.pairwise(bounds)]


@dataclass(frozen=True)
class Part:
    """One worker's share: its sub-folder name, the sample number of its first image, its images in order."""

    folder: str
    first: int
    images: list[Image]


def plan(images: list[Image], shuffle: bool, seed: int, workers: int) -> list[Part]:
    """The parts to write: `images` (ImageFolder order) permuted by `seed` if `shuffle`, cut in `workers`."""
    order = permutation(len(images), seed) if shuffle else range(len(images))
    return [Part(f"{k:05d}", r.start, [images[order[i]] for i in r])
            for k, r in enumerate(partitions(len(images), workers))]
