"""mds: write a split as MDS shards for streaming.StreamingDataset, columns x (jpeg), y (int), wnid (str).

y is the wnid's index among all 1000 sorted wnids. val keeps ImageFolder order (class, then file
name); train is a permutation of that order drawn from mds.shuffle_seed. JPEG bytes are stored as
they are in the source (no decode, no re-encode), read by offset straight from the verified archive
(or, with --from untar, from the unpacked folders: the same shards). WORKERS processes each write a
contiguous part of the order into a sub-folder, and streaming's merge_index joins them."""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing as mp
import os
import platform
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import PIL

from imagenet.archive import Image, Source, image_folder, read_index
from imagenet.core import (
    Config,
    Paths,
    UserError,
    building,
    check_free_space,
    du,
    log,
    main,
    parser,
    positive,
    run_stage,
    setup,
    upstream,
    variant,
    write_json,
)
from imagenet.images import stored
from imagenet.labels import class_index, classes

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


@dataclass(frozen=True)
class Output:
    """Which dataset mds writes: the full-size one, or a low-resolution variant; local, or also remote."""

    resize: int | None = None
    quality: int = 90
    remote: str | None = None  # the object-store folder holding the ILSVRC2012_img_* datasets

    def stage(self) -> str:
        return "mds" + variant(self.resize)

    def remote_dir(self, paths: Paths, split: str) -> str | None:
        return f"{self.remote.rstrip('/')}/{paths.mds(split, self.resize).name}" if self.remote else None


class Job:
    """What every worker needs; set before the workers fork, so they share it without pickling."""

    images: list[Image]
    order: list[int]
    source: Source
    out: Path
    remote: str | None
    output: Output
    cfg: Config
    done: mp.Value  # type: ignore[valid-type]


PREFETCH = 256  # images whose reads are kept in flight ahead of the writer


def reuse_freed_memory() -> None:
    """Let glibc keep and reuse freed large blocks instead of unmapping them: each shard's images
    (tens of MB) are read into new buffers, and faulting in fresh pages for each costs more than
    the copies (bench, with MDSWriter's joins: 5x). Peak memory is unchanged; it is only not returned."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve blocks under 1 GiB from the heap
    libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: keep up to 1 GiB of free heap


def write_part(k: int, part: range) -> tuple[int, list[dict]]:
    """Write samples order[part] into `<out>/<k:05d>/`; returns the bytes read and the images
    re-encoded to RGB JPEG (with their original format and mode)."""
    from imagenet.shards import ShardWriter

    reuse_freed_memory()
    index = class_index()
    images = [Job.images[Job.order[i]] for i in part]
    read_bytes = unreported = 0
    reencoded = []
    local = str(Job.out / f"{k:05d}")
    out = (local, f"{Job.remote}/{k:05d}") if Job.remote else local
    with ShardWriter(out=out, columns=COLUMNS, compression=None, hashes=Job.cfg.hashes,
                     size_limit=Job.cfg.size_limit, keep_local=True) as writer:
        for n, (image, data) in enumerate(zip(images, Job.source.stream(images, PREFETCH), strict=True)):
            read_bytes += len(data)
            data, original = stored(data, f"{image.wnid}/{image.name}", Job.cfg.rgb, Job.output.resize,
                                    Job.output.quality)
            if original is not None:
                reencoded.append({"sample": part[n], "file": f"{image.wnid}/{image.name}", **original})
            writer.write({"x": data, "y": index[image.wnid], "wnid": image.wnid})
            unreported += 1
            if unreported == 256 or n == len(images) - 1:
                with Job.done.get_lock():
                    Job.done.value += unreported
                unreported = 0
    return read_bytes, reencoded


def write_mds(cfg: Config, paths: Paths, split: str, source: str, workers: int, output: Output) -> dict:
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
    Job.cfg, Job.done, Job.output = cfg, mp.get_context("fork").Value("q", 0), output
    Job.remote = output.remote_dir(paths, split)
    out, stage = paths.mds(split, output.resize), output.stage()
    check_free_space(out.parent, need, f"writing MDS shards for {split}")
    parts = partitions(n, workers)
    with building(out) as tmp:
        Job.out = tmp
        ctx = mp.get_context("fork")
        try:
            with ctx.Pool(len(parts)) as pool, tqdm(total=n, desc=f"{stage} {split}", unit="img",
                                                    mininterval=0.5) as bar:
                result = pool.starmap_async(write_part, list(enumerate(parts)))
                while not result.ready():
                    result.wait(0.25)
                    bar.update(Job.done.value - bar.n)
                results = result.get()
                bar.update(Job.done.value - bar.n)
            counts = Counter(i.wnid for i in Job.images)
            write_json(tmp / "classes.json", classes(counts))
            # Name this run's parts: merging "every sub-folder" would take in a remote folder's
            # leftovers from an earlier run with more WORKERS.
            names = [f"{k:05d}/index.json" for k in range(len(parts))]
            if Job.remote:
                from streaming.base.storage.upload import CloudUploader

                merge_index([(str(tmp / n), f"{Job.remote}/{n}") for n in names], (str(tmp), Job.remote),
                            keep_local=True)
                CloudUploader.get((str(tmp), Job.remote), exist_ok=True, keep_local=True).upload_file("classes.json")
            else:
                merge_index([str(tmp / n) for n in names], str(tmp), keep_local=True)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as e:
            if not Job.remote:
                raise
            raise UserError(f"uploading {split} to {Job.remote} failed: {str(e).splitlines()[0]}; "
                            "check REMOTE, the credentials and the endpoint, then run the same command again") from None
    reencoded = [r for _, part in results for r in part]
    report = {"split": split, "dataset": out.name, "images": n, "per_class": dict(sorted(counts.items())),
              "rgb": cfg.rgb, "resize": output.resize, "quality": output.quality if output.resize else None,
              "reencoded": reencoded, "versions": versions()}
    write_json(paths.report(split, stage), report)
    log(f"[{stage} {split}] {n} images; re-encoded as RGB JPEG: "
        + (", ".join(f"{r['file']} ({r['format']} {r['mode']})" for r in reencoded) or "none"))
    return {"path": str(out), "remote": Job.remote, "images": n, "source": source, "workers": len(parts),
            "bytes_read": sum(b for b, _ in results), "bytes_written": du(out),
            "shards": sum(1 for _ in out.glob("*/*.mds")), "reencoded": len(reencoded),
            "report": str(paths.report(split, stage)), "versions": report["versions"]}


def versions() -> dict[str, str]:
    import streaming

    return {"mosaicml-streaming": streaming.__version__, "Pillow": PIL.__version__,
            "python": platform.python_version()}


def run() -> None:
    p = parser(__doc__)
    p.add_argument("--from", dest="source", choices=["tar", "untar"], default="tar",
                   help="read images from the verified archive (default) or the unpacked folders")
    p.add_argument("--workers", type=positive, default=os.cpu_count() or 1, help="processes (default: cores)")
    p.add_argument("--resize", type=int, help="write the low-resolution variant: shorter side at most this")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the --resize variant")
    p.add_argument("--remote", help="also upload the shards as written, under this object-store folder")
    args = p.parse_args()
    output = Output(args.resize, args.quality, args.remote)
    cfg, paths = setup(args)
    split = cfg.split(args.split).name
    import streaming  # noqa: F401 - imports torch (seconds): once, before the workers fork and the clock starts

    logging.getLogger().setLevel(logging.ERROR)  # streaming warns about its own temp and partition folders
    # WORKERS changes how the shards are cut, not what the samples are: no reason to redo the work.
    settings = {"size_limit": cfg.size_limit, "hashes": cfg.hashes, "rgb": cfg.rgb, **asdict(output)}
    if split == "train":
        settings["shuffle_seed"] = cfg.shuffle_seed
    stage = "verify" if args.source == "tar" else "untar"
    inputs = {stage: upstream(paths, split, stage), "mds": settings}
    run_stage(paths, split, output.stage(), inputs,
              lambda: write_mds(cfg, paths, split, args.source, args.workers, output))


if __name__ == "__main__":
    main(run)
