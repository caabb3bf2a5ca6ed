"""mds: write a split as MDS shards for streaming.StreamingDataset, columns x (jpeg), y (int), wnid (str).

y is the wnid's index among all 1000 sorted wnids. val keeps ImageFolder order (class, then file
name); train is a permutation of that order drawn from mds.shuffle_seed. JPEG bytes are stored as
they are in the source (no decode, no re-encode), read by offset straight from the verified archive
(or, with --from untar, from the unpacked folders: the same shards). WORKERS processes each write a
contiguous part of the order into a sub-folder, and streaming's merge_index joins them."""

from __future__ import annotations

import ctypes
import io
import itertools
import logging
import multiprocessing as mp
import os
import random
from pathlib import Path

import PIL.Image

from imagenet.archive import Image, image_folder, read_index
from imagenet.core import (
    Config,
    Paths,
    UserError,
    building,
    check_free_space,
    du,
    main,
    parser,
    run_stage,
    setup,
    upstream,
)
from imagenet.labels import class_index

COLUMNS = {"x": "jpeg", "y": "int", "wnid": "str"}


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


class Source:
    """Reads images by their index row: from the archive by offset, or from the ImageFolder tree.
    `prefetch` asks the kernel to start reading images soon needed, so that the shuffled order's
    random reads are in flight together rather than one after another."""

    def __init__(self, tar: Path | None = None, root: Path | None = None) -> None:
        self.tar, self.root = tar, root
        self.fd: int | None = None  # opened in each worker, after the fork

    def read(self, image: Image) -> bytes:
        if self.root is not None:
            return (self.root / image.wnid / image.name).read_bytes()
        if self.fd is None:
            self.fd = os.open(self.tar, os.O_RDONLY)  # type: ignore[arg-type]
        data = os.pread(self.fd, image.size, image.offset)
        if len(data) != image.size:
            raise UserError(f"{self.tar}: {image.name} ends past the end of the archive; run make verify again")
        return data

    def prefetch(self, images: list[Image]) -> None:
        for image in images:
            if self.root is not None:
                fd = os.open(self.root / image.wnid / image.name, os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                os.close(fd)
            else:
                if self.fd is None:
                    self.fd = os.open(self.tar, os.O_RDONLY)  # type: ignore[arg-type]
                os.posix_fadvise(self.fd, image.offset, image.size, os.POSIX_FADV_WILLNEED)


class Job:
    """What every worker needs; set before the workers fork, so they share it without pickling."""

    images: list[Image]
    order: list[int]
    source: Source
    out: Path
    cfg: Config
    done: mp.Value  # type: ignore[valid-type]


PREFETCH = 256  # images whose reads are kept in flight ahead of the writer


def check_image(image: Image, data: bytes) -> None:
    """Parse the image header (no decode): a file that is not an image is never stored as a sample."""
    try:
        with PIL.Image.open(io.BytesIO(data)):
            pass
    except (PIL.UnidentifiedImageError, OSError, SyntaxError) as e:
        raise UserError(f"{image.wnid}/{image.name}: not a readable image ({e}); it is not written") from None


def reuse_freed_memory() -> None:
    """Let glibc keep and reuse freed large blocks instead of unmapping them: MDSWriter builds each
    shard (tens of MB) in new buffers, and faulting in fresh pages for each cost more than the
    copies themselves (bench: 5x on the joins). Peak memory is unchanged; it is only not returned."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks under 1 GiB from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap


def write_part(k: int, part: range) -> int:
    """Write samples order[part] into `<out>/<k:05d>/`; returns the bytes read."""
    from streaming import MDSWriter

    reuse_freed_memory()
    index = class_index()
    images = [Job.images[Job.order[i]] for i in part]
    read_bytes = unreported = 0
    with MDSWriter(out=str(Job.out / f"{k:05d}"), columns=COLUMNS, compression=None, hashes=Job.cfg.hashes,
                   size_limit=Job.cfg.size_limit) as writer:
        Job.source.prefetch(images[:PREFETCH])
        for n, image in enumerate(images):
            if n % PREFETCH == 0:
                Job.source.prefetch(images[n + PREFETCH : n + 2 * PREFETCH])
            data = Job.source.read(image)
            check_image(image, data)
            read_bytes += len(data)
            writer.write({"x": data, "y": index[image.wnid], "wnid": image.wnid})
            unreported += 1
            if unreported == 256 or n == len(images) - 1:
                with Job.done.get_lock():
                    Job.done.value += unreported
                unreported = 0
    return read_bytes


def write_mds(cfg: Config, paths: Paths, split: str, source: str, workers: int) -> dict:
    from streaming.base.hashing import get_hashes
    from streaming.base.util import merge_index
    from tqdm import tqdm

    if bad := sorted(set(cfg.hashes) - get_hashes()):
        known = ", ".join(sorted(get_hashes()))
        raise UserError(f"{cfg.path}: mds.hashes has unknown algorithm {bad[0]!r} (known: {known})")
    if source == "tar":
        tar = Path(upstream(paths, split, "verify")["path"])
        Job.images, Job.source = read_index(paths.index(split)), Source(tar=tar)
        need = sum(i.size for i in Job.images)
    else:
        root = paths.untar(split)
        Job.images, Job.source = image_folder(root), Source(root=root)
        need = du(root)
        if unknown := sorted({i.wnid for i in Job.images} - set(class_index())):
            raise UserError(f"{root}: folder {unknown[0]!r} is not one of the 1000 ILSVRC2012 wnids")
    n = len(Job.images)
    Job.order = permutation(n, cfg.shuffle_seed) if split == "train" else list(range(n))
    Job.cfg, Job.done = cfg, mp.get_context("fork").Value("q", 0)
    out = paths.mds(split)
    check_free_space(out.parent, need, f"writing MDS shards for {split}")
    parts = partitions(n, workers)
    with building(out) as tmp:
        Job.out = tmp
        ctx = mp.get_context("fork")
        with ctx.Pool(len(parts)) as pool, tqdm(total=n, desc=f"mds {split}", unit="img", mininterval=0.5) as bar:
            result = pool.starmap_async(write_part, list(enumerate(parts)))
            while not result.ready():
                result.wait(0.25)
                bar.update(Job.done.value - bar.n)
            bytes_read = sum(result.get())
            bar.update(Job.done.value - bar.n)
        merge_index(str(tmp), keep_local=True)
    return {"path": str(out), "images": n, "source": source, "workers": len(parts), "bytes_read": bytes_read,
            "bytes_written": du(out), "shards": sum(1 for _ in out.glob("*/*.mds"))}


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--from", dest="source", choices=["tar", "untar"], default="tar",
                   help="read images from the verified archive (default) or the unpacked folders")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes (default: cores)")
    args = p.parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split).name
    import streaming  # noqa: F401 - imports torch (seconds): once, before the workers fork and the clock starts

    logging.getLogger().setLevel(logging.ERROR)  # streaming warns about its own temp and partition folders
    settings = {"size_limit": cfg.size_limit, "hashes": cfg.hashes, "workers": args.workers}
    if split == "train":
        settings["shuffle_seed"] = cfg.shuffle_seed
    stage = "verify" if args.source == "tar" else "untar"
    inputs = {stage: upstream(paths, split, stage), "mds": settings}
    run_stage(paths, split, "mds", inputs, lambda: write_mds(cfg, paths, split, args.source, args.workers))


if __name__ == "__main__":
    main(run)
