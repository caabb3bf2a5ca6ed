"""bench: measure every stage side by side on an ImageNet-like fixture (about 110 KB JPEGs) and
compare each with the copy floor (cp of the same bytes on the same disk). Page caches are dropped
before each row when this runs as root, and each row ends with `sync`, so rows measure the disk."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench_load import Load, cell, cores, warning

from how_to_imagenet.labels import wnids
from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.cli import worker_count
from how_to_imagenet.pipeline.config import HASH_FILES, load_config
from how_to_imagenet.pipeline.console import log, main
from how_to_imagenet.pipeline.files import read_json, remove, write_json
from how_to_imagenet.pipeline.layout import Paths, mds_stage
from how_to_imagenet.pipeline.shm import clean_orphaned_shm
from how_to_imagenet.pipeline.stamps import read_stamp
from how_to_imagenet.testing.fixture import bench_photos, build

PY = sys.executable
T = TypeVar("T")
STAGE = [PY, "-m", "how_to_imagenet.pipeline"]
SELF = [PY, str(Path(__file__).resolve())]  # this script's own measurements, run as subcommands
PEAK_RSS = Path(__file__).with_name("peak_rss.py")  # what `timed` starts each command from
CLASSES = 100
CHART_CUT = 4.0  # bars of the chart longer than this many copy floors are drawn cut
LOADER_WORKERS, BATCH = 2, 64  # the loader rows' DataLoader
MD5_TOO = "md5+sha256+xxh64"  # the verify row with HASHES asking for md5 as well
GPU_BATCH, GPU_STEPS, GPU_MODEL = 256, 40, "resnet50"  # the CUDA rows: steps an epoch, the second epoch timed


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class Timed:
    seconds: float  # the command and the sync after it
    rss: float  # peak RSS in MB of the command and its children
    out: str  # what it printed
    sync: float  # of the seconds, the sync: writing back what the command left dirty


def timed(cmd: list[str], cold: bool = True) -> Timed:
    """Run `cmd` then `sync`, from a cold cache unless `cold` is False; its time and peak memory as
    peak_rss measures them (without the interpreter that starts it)."""
    if cold:
        drop_caches()
    else:
        subprocess.run(["sync"], check=True)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as measured:
        status = subprocess.run([PY, "-S", str(PEAK_RSS), measured.name, *cmd], stdout=out, stderr=err).returncode
        t1 = time.perf_counter()
        subprocess.run(["sync"], check=True)
        synced = time.perf_counter() - t1
        out.seek(0)
        err.seek(0)
        if status != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{err.read().decode(errors='replace')[-2000:]}")
        seconds, kb = measured.read().split()
        return Timed(float(seconds) + synced, int(kb) / 1024, out.read().decode(errors="replace"), synced)


class Bench:
    def __init__(self, root: Path, images: int, workers: int | None, repeat: int, mds: dict) -> None:
        self.root, self.images, self.workers, self.repeat = root, images, workers, repeat
        self.rows: list[dict] = []
        self.copy_rate = 0.0  # bytes/s of the copy floor
        self.project_mds = mds  # the config's mds section: the fixtures are written as the real data would be
        self.summary: dict[str, float] = {}
        self.load = Load()  # the load average before and after each row (bench_load)

    def fixture(self, images: int) -> Path:
        """Build (or reuse) a fixture of about `images` images over 100 classes, 90% train."""
        out = self.root / f"fixture-{images}"
        config = out / "config.yaml"
        if not config.exists():
            import random

            remove(out)
            log(f"[bench] building a fixture of {images} images in {out}")
            classes = wnids()[:: 1000 // CLASSES]
            build(out, seed=1, wnids=classes, train_per_class=max(1, images * 9 // 10 // CLASSES),
                  val_per_class=min(50, max(1, images // 10 // CLASSES)),
                  photos=bench_photos(random.Random(1)), mds=self.project_mds)
        return config

    def workers_args(self, n: int | None) -> list[str]:
        """The stage's --workers for `n` processes; None: the bench's --workers, else the stage's own default."""
        n = n or self.workers
        return ["--workers", str(n)] if n else []

    def label(self, n: int | None, cpu_bound: bool) -> str:
        if n or self.workers:
            return f"WORKERS={n or self.workers}"
        return f"WORKERS default = {worker_count(None, cpu_bound)}"

    def row(self, name: str, nbytes: int, seconds: float, rss: float | None = None, work: float | None = None,
            note: str = "", vs_copy: bool = True) -> None:
        """One table row; `work` (the stage's own time from its stamp, without interpreter start-up) is
        what the ratio uses when given; `vs_copy`: set against the copy floor (not for another disk's rows)."""
        t = work if work is not None else seconds
        r = {"row": name, "seconds": round(seconds, 3), "work_seconds": round(t, 3), "bytes": nbytes,
             "mb_s": round(nbytes / t / 1e6, 1) if t else None,
             "x_copy": round(t / (nbytes / self.copy_rate), 2) if vs_copy and self.copy_rate and nbytes else None,
             "peak_rss_mb": round(rss) if rss is not None else None, "note": note, **self.load.row()}
        self.rows.append(r)
        log(f"[bench] {name}: {t:.2f} s, {r['mb_s']} MB/s, x{r['x_copy']} copy, rss {r['peak_rss_mb']} MB, "
            f"load {cell(r)}")

    def stage(self, name: str, config: Path, data: Path, split: str, *extra: str, stage: str = "",
              cold: bool = True, output: Path | None = None) -> tuple[float, float, float]:
        """Run one stage script from scratch; (wall seconds, peak RSS MB, work seconds): the work is the
        time its stamp records (no interpreter start-up) plus the sync of what it wrote. `output`, the
        last run's result, is deleted before the clock starts, as the copy floor writes a new file."""
        stage = stage or name
        cmd = [*STAGE, name, "--config", str(config), "--data", str(data), *extra, split]

        def once() -> tuple[float, float, float]:
            Paths(data).stamp(split, stage).unlink(missing_ok=True)
            if output is not None:
                remove(output)
            t = timed(cmd, cold)
            stamp = read_stamp(Paths(data).stamp(split, stage))
            assert stamp is not None
            return t.seconds, t.rss, stamp["seconds"] + t.sync

        return self.best(once, key=lambda r: r[2])  # type: ignore[index]

    def best(self, run: Callable[[], T], key: Callable[[T], float] = lambda r: r.seconds) -> T:  # type: ignore[attr-defined]
        """The fastest of `repeat` runs: this machine is shared, and a slower run measured noise."""
        return min((run() for _ in range(self.repeat)), key=key)

    def run(self) -> None:
        config = self.fixture(self.images)
        fixture = config.parent
        train, val = fixture / archive("train"), fixture / archive("val")
        tb, vb = train.stat().st_size, val.stat().st_size
        data = self.root / "data"
        paths = Paths(data)
        remove(data)
        copy = self.root / "copy.tar"
        seconds = self.best(lambda: timed(["cp", str(train), str(copy)])).seconds
        copy.unlink()
        self.copy_rate = tb / seconds
        self.row("copy floor: cp train tar", tb, seconds)
        read = self.best(lambda: timed(["bash", "-c", f"cat '{train}' > /dev/null"]))
        self.row("read: cat > /dev/null", tb, read.seconds)
        self.row("md5sum (coreutils)", tb, self.best(lambda: timed(["md5sum", str(train)])).seconds)
        for algs in (["md5"], ["sha256"], ["xxh64"], ["sha256", "xxh64"], ["md5", "sha256", "xxh64"]):
            t = self.best(lambda a=algs: timed([*SELF, "hash", str(train), *a]), key=lambda r: float(r.out))
            self.row(f"hash {'+'.join(algs)} (one read, threads)", tb, t.seconds, t.rss, float(t.out) + t.sync)
        # The pipeline's own stages, train split.
        (data / "tar").mkdir(parents=True)
        for split in ("train", "val"):
            subprocess.run([*STAGE, "download", "--config", str(config), "--data", str(data), split],
                           check=True, capture_output=True)
        s, rss, work = self.stage("verify", config, data, "train", "--hashes", "md5 sha256 xxh64")
        self.row(f"verify train: {MD5_TOO} + index (HASHES)", tb, s, rss, work)
        s, rss, work = self.stage("verify", config, data, "train")
        self.row(f"verify train: {checked(paths, 'train')} + index", tb, s, rss, work)
        verify_work, self.verify_wall = work, s
        # Each stage with one worker and with its default: untar and RESIZE are bound by the CPU (one per
        # core), full-size mds by the disk (a few readers).
        untarred = {}
        for w in (1, None):
            s, rss, untarred[w] = self.stage("untar", config, data, "train", *self.workers_args(w),
                                             output=paths.untar("train"))
            self.row(f"untar train ({self.label(w, True)})", tb, s, rss, untarred[w])
        s, rss, work = self.stage("mds", config, data, "train", "--from", "untar", *self.workers_args(None),
                                  output=paths.mds("train"))
        self.row(f"mds train from folders ({self.label(None, False)})", tb, s, rss, work)
        remove(data / "untar")
        full = {}
        for w in (1, None):
            s, rss, full[w] = self.stage("mds", config, data, "train", *self.workers_args(w), output=paths.mds("train"))
            self.row(f"mds train from tar ({self.label(w, False)})", tb, s, rss, full[w])
        mds_rss = rss
        # The same two with the archive already in the page cache: what the workers' CPU allows.
        warm = {}
        for w in (1, None):
            subprocess.run(["cat", str(train)], stdout=subprocess.DEVNULL, check=True)
            s_w, rss_w, warm[w] = self.stage("mds", config, data, "train", *self.workers_args(w), cold=False,
                                             output=paths.mds("train"))
            self.row(f"mds train from tar ({self.label(w, False)}), archive in page cache", tb, s_w, rss_w, warm[w])
        full_written = read_stamp(paths.stamp("train", "mds"))["outputs"]["bytes_written"]
        # RESIZE decodes and re-encodes every image: bound by the CPU, where more workers pay most.
        resized = {}
        for w in (1, None):
            s_r, rss_r, resized[w] = self.stage("mds", config, data, "train", *self.workers_args(w),
                                                "--resize", "256", stage=mds_stage(256),
                                                output=paths.mds("train", 256))
            small_written = read_stamp(paths.stamp("train", mds_stage(256)))["outputs"]["bytes_written"]
            self.row(f"mds train RESIZE=256 from tar ({self.label(w, True)})", tb, s_r, rss_r, resized[w],
                     note=f"{small_written / 1e6:.0f} MB written, {small_written / full_written:.0%} of full size")
        # From the verified (and indexed) tars to MDS, both splits; then the same with verify too.
        s_val, _, verify_val = self.stage("verify", config, data, "val")
        s_mds, _, mds_val = self.stage("mds", config, data, "val", *self.workers_args(None), output=paths.mds("val"))
        s = self.find(f"mds train from tar ({self.label(None, False)})")["seconds"]
        work = full[None]
        self.row("verified tars to MDS: mds train + val", tb + vb, s + s_mds, None, work + mds_val)
        # make check of both splits, with the archives out of the way: it compares with verify's hashes.
        hidden = [(t, t.with_name(t.name + ".bench-hidden")) for t in (paths.tar(train.name), paths.tar(val.name))]
        for t, h in hidden:
            t.rename(h)
        try:
            t = self.best(lambda: timed([*STAGE, "check", "--config", str(config), "--data", str(data)]))
        finally:
            for tar, h in hidden:
                h.rename(tar)
        work = sum(read_json(paths.report(sp, "check"))["seconds"] for sp in ("train", "val"))
        self.row("check train + val (no archive read)", tb + vb, t.seconds, t.rss, work + t.sync)
        self.row("downloaded tars to MDS: verify, then mds, each from a cold cache", tb + vb,
                 s + s_mds + s_val + self.verify_wall, None, full[None] + mds_val + verify_work + verify_val)
        walls, works = zip(*(self.one_read(config, data, sp) for sp in ("train", "val")), strict=True)
        self.row("downloaded tars to MDS: verify --then-mds (one read, make all), train + val", tb + vb, sum(walls),
                 None, sum(works))
        # Memory: the same conversion on a fixture 4x smaller.
        small = self.fixture(self.images // 4)
        small_data = self.root / "data-small"
        remove(small_data)
        subprocess.run([*STAGE, "download", "--config", str(small), "--data", str(small_data), "train"],
                       check=True, capture_output=True)
        self.stage("verify", small, small_data, "train")
        s, small_rss, work = self.stage("mds", small, small_data, "train", *self.workers_args(None),
                                        output=Paths(small_data).mds("train"))
        sb = (small.parent / archive("train")).stat().st_size
        self.row(f"mds train from tar, 1/4 of the images ({self.label(None, False)})", sb, s, small_rss, work)
        remove(small_data)
        import bench_evals  # the test sets' archives: a zip and a tar of class folders

        bench_evals.rows(self)
        import bench_disk  # where the disk is the limit: the archives behind a read-limited mount

        bench_disk.rows(self)
        self.loaders(data)
        self.summary.update({
            "mds_from_tar_x_copy": self.find(f"mds train from tar ({self.label(None, False)})")["x_copy"],
            "verified_tars_to_mds_x_copy": self.find("verified tars to MDS: mds train + val")["x_copy"],
            "verify_x_copy": self.find(f"verify train: {checked(paths, 'train')} + index")["x_copy"],
            "verify_x_read": round(self.find(f"verify train: {checked(paths, 'train')} + index")["work_seconds"]
                                   / self.find("read: cat > /dev/null")["work_seconds"], 2),
            "verify_with_md5_x_copy": self.find(f"verify train: {MD5_TOO} + index (HASHES)")["x_copy"],
            "downloaded_vs_verified_tars_to_mds": round(
                self.find("downloaded tars to MDS: verify --then-mds (one read, make all), train + val")["work_seconds"]
                / self.find("verified tars to MDS: mds train + val")["work_seconds"], 2),
            "default_workers_speedup_untar": round(untarred[1] / untarred[None], 2),
            "default_workers_speedup_mds": round(full[1] / full[None], 2),
            "default_workers_speedup_mds_archive_cached": round(warm[1] / warm[None], 2),
            "default_workers_speedup_resize": round(resized[1] / resized[None], 2),
            "rss_full_vs_quarter": round(mds_rss / small_rss, 2),
            "mds_peak_rss_mb": round(mds_rss),
        })

    def one_read(self, config: Path, data: Path, split: str) -> tuple[float, float]:
        """verify --then-mds from a cold cache, as make all runs it on a downloaded archive; (wall seconds,
        work seconds: both stamps' and the sync). The fastest of `repeat` runs."""
        paths = Paths(data)
        cmd = [*STAGE, "verify", "--config", str(config), "--data", str(data), "--then-mds", *self.workers_args(None),
               split]

        def once() -> tuple[float, float]:
            for stage in ("verify", "mds"):
                paths.stamp(split, stage).unlink(missing_ok=True)
            remove(paths.mds(split))
            t = timed(cmd)
            stamps = [read_stamp(paths.stamp(split, stage)) for stage in ("verify", "mds")]
            assert all(stamps), f"verify --then-mds left no stamp for {split}"
            return t.seconds, sum(st["seconds"] for st in stamps if st) + t.sync

        return self.best(once, key=lambda r: r[1])  # type: ignore[index]

    def find(self, name: str) -> dict:
        return next(r for r in self.rows if r["row"] == name)

    def loaders(self, data: Path) -> None:
        """Samples per second through a DataLoader with 2 workers: MDS vs an ImageFolder tree; then ImageNetMDS
    with the reference PIL transforms and with the fast path, train and val, side by side."""
        n = min(4000, self.images // 2)
        self.stage("untar", self.root / f"fixture-{self.images}" / "config.yaml", data, "train",
                   *self.workers_args(None))
        for decode, kind in ((False, "mds"), (False, "folder"), (True, "mds"), (True, "folder")):
            what = "decoded to RGB" if decode else "raw bytes"
            self.loader_row(f"loader {kind} {what} (2 workers)", [data, kind, int(decode), n])
        self.loader_rows(data, n)

    def loader_rows(self, data: Path, n: int) -> None:
        """ImageNetMDS's reference and fast transforms, train and val, over the same shards: the runs of
        the four rows taken in turn, `repeat` rounds, the fastest of each counting (the ratios are what
        matters, and this machine's speed drifts)."""
        kinds = [(split, transform) for split in ("train", "val") for transform in ("pil", "fast")]
        kinds.append(("train", "gpu"))  # the workers' part of the GPU path: read, draw the crop, collate
        best: dict[tuple[str, str], tuple[Timed, dict]] = {}
        for _ in range(self.repeat):
            for kind in kinds:
                t, rate = self.loader_run([data, ":".join(kind), 1, n])
                if kind not in best or rate["samples_s"] > best[kind][1]["samples_s"]:
                    best[kind] = t, rate
        for split, transform in kinds:
            what = ", the workers' part (no decode)" if transform == "gpu" else ""
            self.add_loader_row(f"ImageNetMDS {split} transform={transform}{what} ({LOADER_WORKERS} workers)",
                                *best[split, transform])
        for split in ("train", "val"):
            ref, fast = (self.find(f"ImageNetMDS {split} transform={t} ({LOADER_WORKERS} workers)")
                         for t in ("pil", "fast"))
            self.summary[f"fast_vs_pil_{split}"] = round(fast["samples_s"] / ref["samples_s"], 2)
        if json.loads(subprocess.run([*SELF, "cuda"], capture_output=True, text=True, check=True).stdout):
            self.cuda_rows(data)

    def cuda_rows(self, data: Path) -> None:
        """Where CUDA is present: the GPU path alone, and a ResNet-50 train step (bf16 autocast, channels_last)
        fed by each path, against the same step on synthetic input."""
        cores = worker_count(None, cpu_bound=True)  # the cores this process may use
        n = GPU_STEPS * GPU_BATCH
        runs = [("gpu", min(4, cores), "none"), ("synthetic", 0, GPU_MODEL)]
        runs += [(t, w, GPU_MODEL) for t, w in (("pil", cores), ("fast", cores), ("gpu", min(4, cores)))]
        for transform, workers, model in runs:
            what = "input alone, decoded on the GPU" if model == "none" else f"{model} train step"
            name = f"cuda: {what}, transform={transform}" + (f" ({workers} workers)" if workers else "")
            self.loader_row(name, [data, transform, n, workers, "cuda", model, GPU_BATCH], "train", workers or 1)
        synthetic = self.find(f"cuda: {GPU_MODEL} train step, transform=synthetic")["samples_s"]
        for t in ("pil", "fast", "gpu"):
            row = next(r for r in self.rows if r["row"].startswith(f"cuda: {GPU_MODEL} train step, transform={t} "))
            self.summary[f"cuda_{GPU_MODEL}_fed_by_{t}_vs_synthetic"] = round(row["samples_s"] / synthetic, 2)

    def loader_row(self, name: str, args: list, command: str = "loader", workers: int = LOADER_WORKERS) -> None:
        self.add_loader_row(name, *self.loader_run(args, command), workers)

    def loader_run(self, args: list, command: str = "loader") -> tuple[Timed, dict]:
        t = timed([*SELF, command, *map(str, args)])
        return t, json.loads(t.out)

    def add_loader_row(self, name: str, t: Timed, rate: dict, workers: int = LOADER_WORKERS) -> None:
        self.rows.append({"row": name, "seconds": round(t.seconds, 3), "work_seconds": rate["seconds"],
                          "samples_s": rate["samples_s"], "per_core": round(rate["samples_s"] / workers),
                          "peak_rss_mb": round(t.rss), "bytes": None, "mb_s": None, "x_copy": None,
                          "note": f"{rate['samples']} samples", **self.load.row()})
        log(f"[bench] {name}: {rate['samples_s']} samples/s")


def loader_rate(data: str, kind: str, decode: bool, n: int) -> dict[str, float]:
    """Read `n` samples with a DataLoader(num_workers=2), going round the dataset again where it has fewer (the
    val split), twice: the rate is the second epoch's (persistent workers). `kind` is mds, folder, or
    SPLIT:TRANSFORM for ImageNetMDS."""
    import io

    from PIL import Image
    from torch.utils.data import DataLoader, Dataset, Subset

    def load(raw: bytes) -> int:
        return Image.open(io.BytesIO(raw)).convert("RGB").size[0] if decode else len(raw)

    collate: Callable | None = list
    count: Callable[[Any], int] = len
    if ":" in kind:
        from how_to_imagenet import ImageNetMDS

        clean_orphaned_shm()  # only what no live process uses: a training job beside the bench keeps its own
        split, transform = kind.split(":")
        ds: Dataset = ImageNetMDS(local=str(Paths(Path(data)).mds_root), split=split, transform=transform,
                                  batch_size=BATCH, shuffle=False)
        collate, count = None, lambda batch: len(batch[1])  # default collate: [x, y]
        if transform == "gpu":
            from how_to_imagenet import gpu

            collate, count = gpu.collate, lambda batch: len(batch.y)
    elif kind == "mds":
        from streaming import StreamingDataset

        clean_orphaned_shm()

        class Raw(StreamingDataset):
            def __getitem__(self, i: int) -> int:
                x = super().__getitem__(i)["x"]
                return x.convert("RGB").size[0] if decode else len(x.fp.getvalue())

        ds = Raw(local=str(Paths(Path(data)).mds("train")), remote=None, shuffle=False, batch_size=BATCH)
    else:
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(str(Paths(Path(data)).untar("train")), loader=lambda p: load(Path(p).read_bytes()))
    loader = DataLoader(Subset(ds, [i % len(ds) for i in range(n)]), batch_size=BATCH, num_workers=LOADER_WORKERS,
                        collate_fn=collate, persistent_workers=True)
    return second_epoch(loader, count)


def second_epoch(loader: Iterable, count: Callable[[Any], int], step: Callable[[Any], None] = lambda b: None,
                 sync: Callable[[], None] = lambda: None) -> dict:
    """The rate of the loader's second epoch (its workers persist), `step` run on each batch: the first
    epoch starts the workers and warms the caches, and nothing made before the clock starts is counted."""
    for batch in loader:
        step(batch)
    sync()
    t0, samples = time.perf_counter(), 0
    for batch in loader:
        step(batch)
        samples += count(batch)
    sync()
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 3), "samples": samples, "samples_s": float(f"{samples / seconds:.4g}")}


def train_rate(data: str, transform: str, n: int, workers: int, device: str, model: str, batch: int) -> dict:
    """Images per second of `model`'s train step (bf16 autocast, channels_last, SGD) fed `n` train images by
    ImageNetMDS with `transform` ("pil", "fast", "gpu") through DataLoader(num_workers=workers), or by one
    synthetic batch ("synthetic"). model "none": the input alone. The second epoch of two."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader, Subset

    from how_to_imagenet import ImageNetMDS, gpu, normalize

    dev = torch.device(device)
    step = None
    if model != "none":
        net = getattr(torchvision.models, model)().to(dev).to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            with torch.autocast(dev.type, dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def to_device(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(dev, non_blocking=True)
        x = normalize(x) if x.dtype == torch.uint8 else x.contiguous(memory_format=torch.channels_last)
        return x, y.to(dev, non_blocking=True)

    if transform == "synthetic":
        x = torch.randn(batch, 3, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (batch,), device=dev)
        batches: Iterable = [(x, y)] * (n // batch)
    else:
        clean_orphaned_shm()  # only what no live process maps: a test beside it may be reading
        ds = ImageNetMDS(local=str(Paths(Path(data)).mds_root), split="train", transform=transform, batch_size=batch,
                         shuffle=False)
        sub = Subset(ds, [i % len(ds) for i in range(n)])
        kw = {"batch_size": batch, "num_workers": workers, "pin_memory": dev.type == "cuda", "drop_last": True,
              "persistent_workers": True}
        if transform == "gpu":
            loader = DataLoader(sub, collate_fn=gpu.collate, **kw)
            batches = Epochs(lambda: gpu.decoded(loader, device=dev))
        else:
            loader = DataLoader(sub, **kw)
            batches = Epochs(lambda: (to_device(x, y) for x, y in loader))
    sync = torch.cuda.synchronize if dev.type == "cuda" else lambda: None
    return second_epoch(batches, lambda b: len(b[1]), (lambda b: step(*b)) if step else (lambda b: None), sync)


class Epochs:
    """An iterable that makes a new iterator (one epoch) each time it is iterated."""

    def __init__(self, epoch: Callable[[], Iterable]) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator:
        return iter(self.epoch())


def hash_seconds(path: Path, algorithms: list[str]) -> float:
    """Seconds verify's one-read hashing takes over `path`."""
    from how_to_imagenet.pipeline.hashing import file_digests

    t = time.perf_counter()
    file_digests(path, algorithms, "hash", lambda n: None)
    return time.perf_counter() - t


def checked(paths: Paths, split: str) -> str:
    """The archive hashes the last verify of `split` checked, as a row names them (sha256+xxh64)."""
    out = (read_stamp(paths.stamp(split, "verify")) or {}).get("outputs", {})
    return "+".join(alg for alg in HASH_FILES if alg in out)


def table(rows: list[dict]) -> str:
    lines = ["| row | seconds | MB/s | x copy floor | peak RSS MB | load before -> after |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rate = f"{r['samples_s']} samples/s" if "samples_s" in r else r["mb_s"]
        if "per_core" in r:
            rate += f" ({r['per_core']}/core)"
        lines.append(f"| {r['row']} | {r['work_seconds']:.2f} | {rate} | {r['x_copy'] or '-'} | "
                     f"{r['peak_rss_mb'] if r['peak_rss_mb'] is not None else '-'} | {cell(r)} |")
    return "\n".join(lines)


def chart(rows: list[dict], path: Path) -> None:
    """A horizontal bar per row: its time as a multiple of the copy floor (Pillow only)."""
    from PIL import Image, ImageDraw

    bars = [r for r in rows if r.get("x_copy")]
    width, left, height = 900, 400, 28
    top = min(max(r["x_copy"] for r in bars), CHART_CUT)  # longer bars are cut, so the rest stay readable
    img = Image.new("RGB", (width, 40 + height * len(bars)), "white")
    draw = ImageDraw.Draw(img)
    draw.text((10, 10), "time / copy floor (cp of the same bytes; lower is better)", fill="black")
    for k, r in enumerate(bars):
        y = 36 + k * height
        w = int((width - left - 60) * min(r["x_copy"], top) / top)
        draw.text((10, y + 6), r["row"][:60], fill="black")
        draw.rectangle([left, y + 4, left + w, y + height - 4], fill="#4a7ab5" if r["x_copy"] > 1 else "#888888")
        if r["x_copy"] > top:
            draw.rectangle([left + w - 24, y + 2, left + w - 18, y + height - 2], fill="white")  # the cut
        draw.text((left + w + 6, y + 6), f"{r['x_copy']:.2f}x", fill="black")
    img.save(path)


def measure(argv: list[str]) -> None:
    """The subcommands the bench times in a process of their own: `hash FILE ALG...`,
    `loader DATA KIND DECODE N`, `cuda` (is it there), `train DATA TRANSFORM N WORKERS DEVICE MODEL BATCH`."""
    if argv[0] == "hash":
        print(hash_seconds(Path(argv[1]), argv[2:]))
    elif argv[0] == "cuda":
        import torch

        print(json.dumps(torch.cuda.is_available()))
    elif argv[0] == "train":
        data, transform, n, workers, device, model, batch = argv[1:]
        print(json.dumps(train_rate(data, transform, int(n), int(workers), device, model, int(batch))))
    else:
        print(json.dumps(loader_rate(argv[1], argv[2], argv[3] == "1", int(argv[4]))))


def run() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("hash", "loader", "cuda", "train"):
        return measure(sys.argv[1:])
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--config", default="config.yaml", help="config whose data_dir is the default --data")
    p.add_argument("--data", type=Path, help="data folder (default: the config's data_dir)")
    p.add_argument("--images", type=int, default=13600, help="images in the fixture (about 110 KB each)")
    p.add_argument("--workers", type=int, help="processes for every stage row (default: 1 and each stage's default)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each row; the fastest counts")
    args = p.parse_args()
    cfg = load_config(args.config)
    args.data = args.data or cfg.data_dir
    t0 = time.time()
    mds = {"size_limit": cfg.size_limit, "shuffle_seed": cfg.shuffle_seed, "hashes": cfg.hashes, "rgb": cfg.rgb}
    bench = Bench(args.data.resolve() / "bench", args.images, args.workers, args.repeat, mds)
    cold = drop_caches()
    bench.run()
    name = "bench"
    reports = args.data.resolve() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {shutil.disk_usage(reports).total // 10**9} GB disk"
    busy = warning(bench.rows, cores())
    result = {"machine": machine, "caches_dropped": cold, "images": args.images, "workers": args.workers,
              "repeat": args.repeat, "cores": cores(), "busy": busy,
              "rows": bench.rows, "summary": bench.summary}
    write_json(reports / f"{name}.json", result)
    chart(bench.rows, reports / f"{name}.png")
    print(f"bench on {machine}; {args.images} images; caches {'dropped' if cold else 'warm'}; "
          f"fastest of {args.repeat} runs per row; "
          f"took {time.time() - t0:.0f} s\n")
    print(table(bench.rows))
    if busy:
        print("\n" + busy)
    print("\n" + "\n".join(f"- {k}: {v}" for k, v in bench.summary.items()))
    print(f"\nwritten: {reports / name}.json, {reports / name}.png")


if __name__ == "__main__":
    main(run)
