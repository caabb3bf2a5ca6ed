"""bench-peers: this project's loaders and writer against its peers' (FFCV, NVIDIA DALI's CPU pipeline, LitData,
WebDataset, mosaicml-streaming, torchvision), side by side in one run on the same JPEGs (the bench fixture's
train split), run by the peers' environment (make bench-peers builds it; never the default install).

Every loader row reads the whole split twice with 2 workers (DataLoader processes, or a loader's own threads)
and batches of 64, the same crop (RandomResizedCrop 224 of scale (0.08, 1) and ratio (3/4, 4/3) and a flip;
val: the short side to 256, centre crop 224), from a cold page cache; the second epoch is timed. The rows
run in turn, `--rounds` rounds; a row's best and median count. Every writer row converts the same images
from the cold cache, against the copy floor (cp of the train tar).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import STAGE, Bench, drop_caches, timed

from how_to_imagenet.pipeline.config import load_config
from how_to_imagenet.pipeline.console import log, main
from how_to_imagenet.pipeline.files import remove, write_json
from how_to_imagenet.pipeline.layout import Paths

SELF = [sys.executable, str(Path(__file__).resolve())]
BATCH, WORKERS, SIZE, RESIZE = 64, 2, 224, 256
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Loader rows: name -> (what it is, output). Each runs as `bench_peers.py load NAME SPLIT DATA PEERS`.
LOADERS = {
    "ffcv": ("FFCV 1.0.2, RandomResizedCrop/CenterCrop RGBImageDecoder, NormalizeImage", "float32, normalised"),
    "ffcv-uint8": ("FFCV 1.0.2, the same decoders, no NormalizeImage", "uint8"),
    "dali": ("NVIDIA DALI, CPU pipeline (image_random_crop, resize, crop_mirror_normalize)", "float32, normalised"),
    "dali-uint8": ("NVIDIA DALI, CPU pipeline, crop_mirror_normalize to uint8", "uint8"),
    "loader": ("ImageNetLoader (this project), 2 threads", "uint8"),
    "loader-1": ("ImageNetLoader (this project), 1 thread", "uint8"),
    "loader-float": ("ImageNetLoader (this project), 2 threads, normalize=True", "float32, normalised"),
    "loader-bare": ("its decoder alone in a pool of the same 2 threads, bytes in memory (the ceiling)", "uint8"),
    "mds-fast": ('ImageNetMDS transform="fast", DataLoader', "uint8"),
    "mds-pil": ('ImageNetMDS transform="pil", DataLoader', "float32, normalised"),
    "mds-gpu": ('ImageNetMDS transform="gpu": the CPU side (read, draw the crop, collate; no decode)', "JPEG bytes"),
    "streaming-pil": ("mosaicml-streaming StreamingDataset + PIL + PILToTensor", "uint8"),
    "folder-pil": ("torchvision ImageFolder + PIL", "float32, normalised"),
    "litdata": ("LitData StreamingDataset + the same torchvision transform", "float32, normalised"),
    "webdataset": ("WebDataset + the same torchvision transform", "float32, normalised"),
}


def versions() -> dict[str, str]:
    out = {}
    for name in ("ffcv", "nvidia-dali-cuda120", "litdata", "webdataset", "mosaicml-streaming", "torch",
                 "torchvision", "pillow", "opencv-python"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "-"
    return out


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


# -- the writers -----------------------------------------------------------------------------------------

def files(data: Path) -> list[tuple[str, int]]:
    """The train split's JPEG files in the unpacked tree, and their class index (sorted folders)."""
    root = Paths(data).untar("train")
    classes = sorted(p.name for p in root.iterdir())
    return [(str(f), k) for k, c in enumerate(classes) for f in sorted((root / c).iterdir())]


def write(kind: str, data: Path, out: Path) -> None:
    """Convert the train split's files with a peer's writer into `out` (2 workers where it takes any)."""
    remove(out)
    items = files(data)
    if kind == "ffcv":
        from ffcv.fields import IntField, RGBImageField
        from ffcv.writer import DatasetWriter
        from PIL import Image

        class Files:
            def __len__(self) -> int:
                return len(items)

            def __getitem__(self, i: int) -> tuple[Any, int]:
                return Image.open(items[i][0]).convert("RGB"), items[i][1]

        out.parent.mkdir(parents=True, exist_ok=True)
        DatasetWriter(str(out), {"image": RGBImageField(write_mode="jpg", jpeg_quality=90), "label": IntField()},
                      num_workers=WORKERS).from_indexed_dataset(Files())
    elif kind == "litdata":
        import litdata

        litdata.optimize(fn=read_item, inputs=items, output_dir=str(out), chunk_bytes="64MB", num_workers=WORKERS)
    elif kind == "webdataset":
        import webdataset as wds

        out.mkdir(parents=True)
        with wds.ShardWriter(str(out / "shard-%05d.tar"), maxsize=64e6, verbose=0) as sink:
            for i, (path, y) in enumerate(items):
                sink.write({"__key__": f"{i:08d}", "jpg": Path(path).read_bytes(), "cls": y})
    elif kind == "streaming":
        from streaming import MDSWriter

        with MDSWriter(out=str(out), columns={"x": "jpeg", "y": "int"}, size_limit=1 << 26) as sink:
            for path, y in items:
                sink.write({"x": Path(path).read_bytes(), "y": y})
    else:
        raise SystemExit(f"bench_peers: no writer {kind!r}")


def read_item(item: tuple[str, int]) -> dict:
    return {"image": Path(item[0]).read_bytes(), "label": item[1]}


# -- the loaders -----------------------------------------------------------------------------------------

def torchvision_transform(split: str, uint8: bool = False) -> Callable:
    from torchvision import transforms as T

    crop = ([T.RandomResizedCrop(SIZE, SCALE, RATIO), T.RandomHorizontalFlip()] if split == "train" else
            [T.Resize(RESIZE), T.CenterCrop(SIZE)])
    tail = [T.PILToTensor()] if uint8 else [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose([*crop, *tail])


def epochs(loader: Iterable, count: Callable[[Any], int]) -> dict:
    """The second epoch's rate (the first starts the workers and builds what the loader caches)."""
    for _ in loader:
        pass
    t0, samples = time.perf_counter(), 0
    for batch in loader:
        samples += count(batch)
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "samples": samples, "samples_s": round(samples / seconds, 1)}


def dataloader(dataset: Any, collate: Callable | None = None, shuffle: bool = False) -> Any:
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=BATCH, num_workers=WORKERS, persistent_workers=True, shuffle=shuffle,
                      collate_fn=collate)


def load(kind: str, split: str, data: Path, peers: Path) -> dict:
    """One loader row's measurement (run in a process of its own)."""
    import torch

    torch.set_num_threads(1)
    train = split == "train"
    mds = str(Paths(data).mds_root)
    first: Callable[[Any], int] = lambda b: len(b[1])  # noqa: E731 - (images, y) batches
    if kind.startswith("loader"):
        from how_to_imagenet import FastTrain, FastVal, ImageNetLoader

        loader = ImageNetLoader(local=mds, split="train", batch_size=BATCH, shuffle=train,
                                threads=1 if kind == "loader-1" else WORKERS,
                                transform=FastTrain() if train else FastVal(), normalize=kind == "loader-float")
        if kind == "loader-bare":
            return bare(loader)
        return epochs(loader, first)
    if kind.startswith("mds-"):
        from how_to_imagenet import ImageNetMDS, gpu

        transform = {"mds-fast": "fast", "mds-pil": "pil", "mds-gpu": "gpu"}[kind]
        ds = ImageNetMDS(local=mds, split="train", transform=transform, batch_size=BATCH, shuffle=train)
        if kind == "mds-gpu":
            ds.transform = gpu.JpegCrops(train=train)
            return epochs(dataloader(ds, gpu.collate), lambda b: len(b.y))
        if not train:
            from how_to_imagenet.transforms import FastVal, val_transform

            ds.transform = FastVal() if kind == "mds-fast" else val_transform()
        return epochs(dataloader(ds), first)
    if kind == "streaming-pil":
        from streaming import StreamingDataset

        transform = torchvision_transform(split, uint8=True)

        class Decoded(StreamingDataset):
            def __getitem__(self, i: int) -> tuple[Any, int]:
                sample = super().__getitem__(i)
                return transform(sample["x"].convert("RGB")), sample["y"]

        return epochs(dataloader(Decoded(local=str(peers / "streaming"), batch_size=BATCH, shuffle=train)), first)
    if kind == "folder-pil":
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(str(Paths(data).untar("train")), transform=torchvision_transform(split))
        return epochs(dataloader(ds, shuffle=train), first)
    if kind == "litdata":
        import io

        import litdata
        from PIL import Image

        transform = torchvision_transform(split)

        class Lit(litdata.StreamingDataset):
            def __getitem__(self, index: Any) -> tuple[Any, int]:
                item = super().__getitem__(index)
                return transform(Image.open(io.BytesIO(item["image"])).convert("RGB")), item["label"]

        return epochs(dataloader(Lit(input_dir=str(peers / "litdata"), shuffle=train)), first)
    if kind == "webdataset":
        import webdataset as wds

        urls = sorted(str(p) for p in (peers / "webdataset").glob("shard-*.tar"))
        ds = (wds.WebDataset(urls, shardshuffle=len(urls) if train else False, empty_check=False)
              .decode("pil").to_tuple("jpg", "cls").map_tuple(torchvision_transform(split), lambda y: y))
        return epochs(dataloader(ds), first)
    if kind.startswith("ffcv"):
        return ffcv_rate(kind, train, peers / "ffcv.beton")
    if kind.startswith("dali"):
        return dali_rate(kind, train, data)
    raise SystemExit(f"bench_peers: no loader {kind!r}")


def bare(loader: Any) -> dict:
    """The extension's decoder alone, in a pool of the loader's threads, over the epoch's bytes and plans read
    into memory first, batches queued as the loader queues them (prefetch + 1 buffers): what ImageNetLoader
    would give if reading, planning and handing on cost nothing."""
    import numpy as np

    from how_to_imagenet import _crops
    from how_to_imagenet.transforms import scaled

    samples = list(loader.dataset)
    batches = [loader.plan(samples[i:i + BATCH]) for i in range(0, len(samples), BATCH)]
    outs = [np.empty((BATCH, SIZE, SIZE, 3), np.uint8) for _ in range(loader.prefetch + 1)]
    pool, (shift, scale) = _crops.Pool(loader.threads), scaled()

    def run() -> None:
        tickets: list[int] = []
        for k, b in enumerate(batches):
            if k >= len(outs):
                pool.wait(tickets[k - len(outs)])
            tickets.append(pool.submit(b.jpegs, b.params, outs[k % len(outs)], SIZE, 0,
                                       int(loader.transform.fast_dct), shift, scale))
        for ticket in tickets[-len(outs):]:
            pool.wait(ticket)

    run()
    t0 = time.perf_counter()
    run()
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "samples": len(samples), "samples_s": round(len(samples) / seconds, 1)}


def ffcv_rate(kind: str, train: bool, beton: Path) -> dict:
    import numpy as np
    from ffcv.fields.decoders import CenterCropRGBImageDecoder, IntDecoder, RandomResizedCropRGBImageDecoder
    from ffcv.loader import Loader, OrderOption
    from ffcv.transforms import NormalizeImage, RandomHorizontalFlip, Squeeze, ToTensor, ToTorchImage

    decoder = (RandomResizedCropRGBImageDecoder((SIZE, SIZE), scale=SCALE, ratio=RATIO) if train else
               CenterCropRGBImageDecoder((SIZE, SIZE), ratio=SIZE / RESIZE))
    image = [decoder, *([RandomHorizontalFlip()] if train else [])]
    if kind == "ffcv":  # on the CPU NormalizeImage runs on the numpy batch, before ToTensor
        image.append(NormalizeImage(np.array(MEAN) * 255, np.array(STD) * 255, np.float32))
    image += [ToTensor(), ToTorchImage()]
    loader = Loader(str(beton), batch_size=BATCH, num_workers=WORKERS, os_cache=True,
                    order=OrderOption.RANDOM if train else OrderOption.SEQUENTIAL,
                    pipelines={"image": image, "label": [IntDecoder(), ToTensor(), Squeeze()]})
    return epochs(loader, lambda b: len(b[1]))


def dali_rate(kind: str, train: bool, data: Path) -> dict:
    import math

    import numpy as np
    import torch
    from nvidia.dali import fn, pipeline_def, types

    root = str(Paths(data).untar("train"))
    count = len(files(data))

    @pipeline_def(batch_size=BATCH, num_threads=WORKERS, device_id=None)
    def pipe() -> tuple[Any, Any]:
        jpegs, labels = fn.readers.file(file_root=root, random_shuffle=train, name="files")
        if train:
            images = fn.decoders.image_random_crop(jpegs, device="cpu", output_type=types.RGB,
                                                   random_area=list(SCALE), random_aspect_ratio=list(RATIO))
            images = fn.resize(images, resize_x=SIZE, resize_y=SIZE)
            mirror = fn.random.coin_flip()
        else:
            images = fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)
            images = fn.resize(images, resize_shorter=RESIZE)
            mirror = False
        floats = kind == "dali"
        images = fn.crop_mirror_normalize(images, dtype=types.FLOAT if floats else types.UINT8, output_layout="CHW",
                                          crop=(SIZE, SIZE), mirror=mirror,
                                          mean=[255 * m for m in MEAN] if floats else [0.0] * 3,
                                          std=[255 * s for s in STD] if floats else [1.0] * 3)
        return images, labels

    p = pipe()
    p.build()
    steps = math.ceil(count / BATCH)

    class Epoch:
        def __iter__(self) -> Iterator[tuple[Any, Any]]:  # one epoch of batches, as torch tensors
            for _ in range(steps):
                images, labels = p.run()
                yield torch.from_numpy(np.asarray(images.as_tensor())), labels

    return epochs(Epoch(), lambda b: len(b[0]))


# -- the run ---------------------------------------------------------------------------------------------

class Peers:
    def __init__(self, bench: Bench, data: Path, rounds: int) -> None:
        self.bench, self.data, self.rounds = bench, data, rounds
        self.peers = data.parent / "peers"
        self.writers: list[dict] = []
        self.loaders: list[dict] = []

    def prepare(self, config: Path) -> None:
        """The fixture's train split as shards (this project's mds), an unpacked tree, and the peers' formats."""
        for stage in ("download", "verify", "untar", "mds"):
            subprocess.run([*STAGE, stage, "--config", str(config), "--data", str(self.data), "train"], check=True,
                           capture_output=True)

    def convert(self, config: Path) -> None:
        tar = Paths(self.data).tar(load_config(str(config)).split("train").archive)
        nbytes = tar.stat().st_size
        floor = min(timed(["cp", str(tar), str(self.peers / "copy.tar")]).seconds for _ in range(2))
        (self.peers / "copy.tar").unlink()
        rows = [("this project: mds from the tar (WORKERS=2)", None), ("FFCV DatasetWriter (jpg, q90)", "ffcv"),
                ("LitData optimize", "litdata"), ("WebDataset ShardWriter", "webdataset"),
                ("mosaicml-streaming MDSWriter", "streaming")]
        for name, kind in rows:
            if kind is None:
                cmd = [*STAGE, "mds", "--config", str(config), "--data", str(self.data), "--workers", str(WORKERS),
                       "train"]
                remove(Paths(self.data).mds("train"))
                remove(Paths(self.data).stamp("train", "mds"))
            else:
                cmd = [*SELF, "write", kind, str(self.data), str(self.peers / (kind + (".beton" if kind == "ffcv"
                                                                                       else "")))]
            t = timed(cmd)
            self.writers.append({"row": name, "seconds": round(t.seconds, 2), "x_copy": round(t.seconds / floor, 2),
                                 "peak_rss_mb": round(t.rss), "bytes": nbytes})
            log(f"[bench-peers] {name}: {t.seconds:.2f} s, x{t.seconds / floor:.2f} the copy floor")

    def load(self, splits: list[str], kinds: list[str]) -> None:
        runs: dict[tuple[str, str], list[float]] = {}
        loads: list[float] = []
        for r in range(self.rounds):
            for split in splits:
                for kind in kinds:
                    if kind == "mds-gpu" and split == "val":
                        continue
                    loads.append(load_average())
                    t = timed([*SELF, "load", kind, split, str(self.data), str(self.peers)])
                    rate = json.loads(t.out.strip().splitlines()[-1])
                    runs.setdefault((split, kind), []).append(rate["samples_s"])
                    log(f"[bench-peers] round {r + 1}: {split} {kind}: {rate['samples_s']} samples/s "
                        f"(load {loads[-1]})")
        for (split, kind), rates in runs.items():
            what, output = LOADERS[kind]
            self.loaders.append({"split": split, "loader": kind, "row": what, "output": output,
                                 "best": max(rates), "median": round(statistics.median(rates), 1), "rounds": rates})
        self.load_seen = (min(loads), max(loads)) if loads else (0.0, 0.0)


def table(rows: list[dict]) -> str:
    lines = ["| loader | train samples/s | val samples/s | output |", "| --- | ---: | ---: | --- |"]
    for kind, (what, output) in LOADERS.items():
        cells = []
        for split in ("train", "val"):
            r = next((r for r in rows if r["loader"] == kind and r["split"] == split), None)
            cells.append(f"{r['best']:,.0f} ({r['median']:,.0f})" if r else "-")
        if cells != ["-", "-"]:
            lines.append(f"| {what} | {cells[0]} | {cells[1]} | {output} |")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    """A bar per loader row and split: its best samples/s (Pillow only)."""
    from PIL import Image, ImageDraw

    width, left, height = 1000, 520, 24
    top = max(r["best"] for r in rows)
    img = Image.new("RGB", (width, 40 + height * len(rows)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), "samples/s, second epoch, 2 workers, batch 64 (higher is better; best of the rounds)",
              fill="black")
    for k, r in enumerate(rows):
        y = 36 + k * height
        w = int((width - left - 80) * r["best"] / top)
        ours = r["loader"].startswith("loader")
        draw.text((10, y + 5), f"{r['split']}: {r['row']}"[:80], fill="black")
        draw.rectangle([left, y + 3, left + w, y + height - 3], fill="#4a7ab5" if ours else "#888888")
        draw.text((left + w + 6, y + 5), f"{r['best']:,.0f}", fill="black")
    img.save(path)


def run() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "load":  # a process of its own: what a killed one left is freed
        from how_to_imagenet.pipeline.shm import clean_orphaned_shm

        clean_orphaned_shm()
        print(json.dumps(load(sys.argv[2], sys.argv[3], Path(sys.argv[4]), Path(sys.argv[5]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "write":
        return write(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="config.yaml", help="config whose data_dir is the default --data")
    p.add_argument("--data", type=Path, help="data folder (default: the config's data_dir)")
    p.add_argument("--images", type=int, default=6600, help="images in the fixture (90%% train: the rows' images)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every loader row, taken in turn")
    p.add_argument("--loaders", default=",".join(LOADERS), help="the loader rows to run, comma-separated")
    p.add_argument("--splits", default="train,val")
    p.add_argument("--no-writers", action="store_true", help="skip the writer rows")
    p.add_argument("--report", default="bench-peers", help="the name of the JSON and PNG under DATA/reports")
    args = p.parse_args()
    cfg = load_config(args.config)
    root = (args.data or cfg.data_dir).resolve()
    t0 = time.time()
    mds = {"size_limit": cfg.size_limit, "shuffle_seed": cfg.shuffle_seed, "hashes": cfg.hashes, "rgb": cfg.rgb}
    bench = Bench(root / "bench", args.images, WORKERS, 1, mds)
    config = bench.fixture(args.images)
    data = root / "bench" / f"peers-{args.images}" / "data"
    peers = Peers(bench, data, args.rounds)
    peers.peers.mkdir(parents=True, exist_ok=True)
    cold = drop_caches()
    before = load_average()
    peers.prepare(config)
    if not args.no_writers:
        peers.convert(config)
    peers.load(args.splits.split(","), args.loaders.split(","))
    reports = root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    result = {"command": " ".join(sys.argv), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "caches_dropped": cold, "images": len(files(data)), "batch": BATCH, "workers": WORKERS,
              "rounds": args.rounds, "load_average": {"start": before, "rows_min": peers.load_seen[0],
                                                      "rows_max": peers.load_seen[1], "end": load_average()},
              "versions": versions(), "writers": peers.writers, "loaders": peers.loaders}
    write_json(reports / f"{args.report}.json", result)
    if peers.loaders:
        chart(peers.loaders, reports / f"{args.report}.png")
    print(f"bench-peers on {result['machine']}; {result['images']} images; caches {'dropped' if cold else 'warm'};"
          f" {args.rounds} rounds (best, median in brackets); load average {before} at the start, "
          f"{peers.load_seen[0]}-{peers.load_seen[1]} before the rows; took {time.time() - t0:.0f} s\n")
    if peers.writers:
        print("| writer | seconds | x copy floor | peak RSS MB |\n| --- | ---: | ---: | ---: |")
        print("\n".join(f"| {w['row']} | {w['seconds']} | {w['x_copy']} | {w['peak_rss_mb']} |"
                        for w in peers.writers) + "\n")
    print(table(peers.loaders))
    print(f"\nversions: {', '.join(f'{k} {v}' for k, v in result['versions'].items())}")
    print(f"written: {reports / args.report}.json, {reports / args.report}.png")


if __name__ == "__main__":
    main(run)
