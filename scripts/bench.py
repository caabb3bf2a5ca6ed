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
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from imagenet.core import PROJECT, Paths, log, main, read_stamp, remove, variant, write_json
from imagenet.fixture import bench_photos, build
from imagenet.labels import wnids

PY = sys.executable
T = TypeVar("T")
SCRIPTS = PROJECT / "scripts"
CLASSES = 100
CHART_CUT = 4.0  # bars of the chart longer than this many copy floors are drawn cut


def drop_caches() -> bool:
    subprocess.run(["sync"], check=True)
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def timed(cmd: list[str], cold: bool = True) -> tuple[float, float, str]:
    """Run `cmd` then `sync`, from a cold cache unless `cold` is False; (seconds, peak RSS in MB of
    the command and its children, what it printed)."""
    if cold:
        drop_caches()
    else:
        subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        t1 = time.perf_counter()
        subprocess.run(["sync"], check=True)
        Bench.sync_seconds = time.perf_counter() - t1  # writing back what the command left dirty
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{err.read().decode(errors='replace')[-2000:]}")
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


class Bench:
    sync_seconds = 0.0  # of the last timed command

    def __init__(self, root: Path, images: int, workers: int, repeat: int) -> None:
        self.root, self.images, self.workers, self.repeat = root, images, workers, repeat
        self.rows: list[dict] = []
        self.copy_rate = 0.0  # bytes/s of the copy floor
        self.project_mds = yaml.safe_load((PROJECT / "config.yaml").read_text())["mds"]  # the defaults

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

    def row(self, name: str, nbytes: int, seconds: float, rss: float | None = None, work: float | None = None,
            note: str = "") -> None:
        """One table row; `work` (the stage's own time from its stamp, without interpreter start-up) is
        what the ratio uses when given."""
        t = work if work is not None else seconds
        r = {"row": name, "seconds": round(seconds, 3), "work_seconds": round(t, 3), "bytes": nbytes,
             "mb_s": round(nbytes / t / 1e6, 1) if t else None,
             "x_copy": round(t / (nbytes / self.copy_rate), 2) if self.copy_rate and nbytes else None,
             "peak_rss_mb": round(rss) if rss is not None else None, "note": note}
        self.rows.append(r)
        log(f"[bench] {name}: {t:.2f} s, {r['mb_s']} MB/s, x{r['x_copy']} copy, rss {r['peak_rss_mb']} MB")

    def stage(self, script: str, config: Path, data: Path, split: str, *extra: str, stage: str = "",
              cold: bool = True, output: Path | None = None) -> tuple[float, float, float]:
        """Run one stage script from scratch; (wall seconds, peak RSS MB, work seconds): the work is the
        time its stamp records (no interpreter start-up) plus the sync of what it wrote. `output`, the
        last run's result, is deleted before the clock starts, as the copy floor writes a new file."""
        stage = stage or script.removesuffix(".py")
        cmd = [PY, str(SCRIPTS / script), "--config", str(config), "--data", str(data), *extra, split]

        def once() -> tuple[float, float, float]:
            Paths(data).stamp(split, stage).unlink(missing_ok=True)
            if output is not None:
                remove(output)
            seconds, rss, _ = timed(cmd, cold)
            stamp = read_stamp(Paths(data).stamp(split, stage))
            assert stamp is not None
            return seconds, rss, stamp["seconds"] + Bench.sync_seconds

        return self.best(once, key=lambda r: r[2])

    def best(self, run: Callable[[], T], key: Callable[[T], float] = lambda r: r[0]) -> T:  # type: ignore[index]
        """The fastest of `repeat` runs: this machine is shared, and a slower run measured noise."""
        return min((run() for _ in range(self.repeat)), key=key)

    def run(self) -> None:
        config = self.fixture(self.images)
        fixture = config.parent
        train, val = fixture / "ILSVRC2012_img_train.tar", fixture / "ILSVRC2012_img_val.tar"
        tb, vb = train.stat().st_size, val.stat().st_size
        data = self.root / "data"
        paths = Paths(data)
        remove(data)
        copy = self.root / "copy.tar"
        seconds, _, _ = self.best(lambda: timed(["cp", str(train), str(copy)]))
        copy.unlink()
        self.copy_rate = tb / seconds
        self.row("copy floor: cp train tar", tb, seconds)
        self.row("read: cat > /dev/null", tb, self.best(lambda: timed(["bash", "-c", f"cat {train} > /dev/null"]))[0])
        self.row("md5sum (coreutils)", tb, self.best(lambda: timed(["md5sum", str(train)]))[0])
        for algs in (["md5"], ["sha256"], ["xxh64"], ["md5", "sha256", "xxh64"]):
            code = (f"import sys, time; sys.path.insert(0, {str(SCRIPTS)!r}); from verify import file_digests; "
                    "t = time.perf_counter(); "
                    f"file_digests(__import__('pathlib').Path({str(train)!r}), {algs!r}, 'hash', lambda n: None); "
                    "print(time.perf_counter() - t)")
            seconds, rss, out = self.best(lambda c=code: timed([PY, "-c", c]), key=lambda r: float(r[2]))
            self.row(f"hash {'+'.join(algs)} (one read, threads)", tb, seconds, rss, float(out) + Bench.sync_seconds)
        # The pipeline's own stages, train split.
        (data / "tar").mkdir(parents=True)
        for split in ("train", "val"):
            subprocess.run([PY, str(SCRIPTS / "download.py"), "--config", str(config), "--data", str(data), split],
                           check=True, capture_output=True)
        s, rss, work = self.stage("verify.py", config, data, "train")
        self.row("verify train: md5+sha256+xxh64 + index", tb, s, rss, work)
        verify_work, self.verify_wall = work, s
        s, rss, work = self.stage("untar.py", config, data, "train", "--workers", str(self.workers),
                                  output=paths.untar("train"))
        self.row(f"untar train (WORKERS={self.workers})", tb, s, rss, work)
        s, rss, work = self.stage("mds.py", config, data, "train", "--from", "untar", "--workers", str(self.workers),
                                  output=paths.mds("train"))
        self.row(f"mds train from folders (WORKERS={self.workers})", tb, s, rss, work)
        remove(data / "untar")
        s, rss, work1 = self.stage("mds.py", config, data, "train", "--workers", "1", output=paths.mds("train"))
        self.row("mds train from tar (WORKERS=1)", tb, s, rss, work1)
        s, rss, work = self.stage("mds.py", config, data, "train", "--workers", str(self.workers),
                                  output=paths.mds("train"))
        self.row(f"mds train from tar (WORKERS={self.workers})", tb, s, rss, work)
        speedup = work1 / work
        mds_rss = rss
        # The same two with the archive already in the page cache: what the workers' CPU allows.
        warm = []
        for w in (1, self.workers):
            subprocess.run(["cat", str(train)], stdout=subprocess.DEVNULL, check=True)
            s_w, rss_w, work_w = self.stage("mds.py", config, data, "train", "--workers", str(w), cold=False,
                                            output=paths.mds("train"))
            self.row(f"mds train from tar (WORKERS={w}), archive in page cache", tb, s_w, rss_w, work_w)
            warm.append(work_w)
        full_written = read_stamp(paths.stamp("train", "mds"))["outputs"]["bytes_written"]
        # RESIZE decodes and re-encodes every image: bound by the CPU, where more workers pay most.
        resized = {}
        for w in sorted({1, self.workers}):
            s_r, rss_r, resized[w] = self.stage("mds.py", config, data, "train", "--workers", str(w),
                                                "--resize", "256", stage="mds" + variant(256),
                                                output=paths.mds("train", 256))
            small_written = read_stamp(paths.stamp("train", "mds" + variant(256)))["outputs"]["bytes_written"]
            self.row(f"mds train RESIZE=256 from tar (WORKERS={w})", tb, s_r, rss_r, resized[w],
                     note=f"{small_written / 1e6:.0f} MB written, {small_written / full_written:.0%} of full size")
        # From the verified (and indexed) tars to MDS, both splits; then the same with verify too.
        s_val, _, verify_val = self.stage("verify.py", config, data, "val")
        s_mds, _, mds_val = self.stage("mds.py", config, data, "val", "--workers", str(self.workers),
                                       output=paths.mds("val"))
        self.row("verified tars to MDS: mds train + val", tb + vb, s + s_mds, None, work + mds_val)
        self.row("downloaded tars to MDS: verify + mds, train + val", tb + vb, s + s_mds + s_val + self.verify_wall,
                 None, work + mds_val + verify_work + verify_val)
        # Memory: the same conversion on a fixture 4x smaller.
        small = self.fixture(self.images // 4)
        small_data = self.root / "data-small"
        remove(small_data)
        subprocess.run([PY, str(SCRIPTS / "download.py"), "--config", str(small), "--data", str(small_data), "train"],
                       check=True, capture_output=True)
        self.stage("verify.py", small, small_data, "train")
        s, small_rss, work = self.stage("mds.py", small, small_data, "train", "--workers", str(self.workers),
                                        output=Paths(small_data).mds("train"))
        sb = (small.parent / "ILSVRC2012_img_train.tar").stat().st_size
        self.row(f"mds train from tar, 1/4 of the images (WORKERS={self.workers})", sb, s, small_rss, work)
        remove(small_data)
        self.loaders(data)
        self.summary = {
            "mds_from_tar_x_copy": self.find(f"mds train from tar (WORKERS={self.workers})")["x_copy"],
            "verified_tars_to_mds_x_copy": self.find("verified tars to MDS: mds train + val")["x_copy"],
            "verify_all_vs_md5sum": round(self.find("md5sum (coreutils)")["work_seconds"]
                                          / self.find("hash md5+sha256+xxh64 (one read, threads)")["work_seconds"], 2),
            "verify_stage_vs_md5sum": round(self.find("md5sum (coreutils)")["work_seconds"]
                                            / self.find("verify train: md5+sha256+xxh64 + index")["work_seconds"], 2),
            "workers_speedup": round(speedup, 2),
            "workers_speedup_archive_cached": round(warm[0] / warm[1], 2),
            "workers_speedup_resize": round(resized[1] / resized[self.workers], 2),
            "rss_full_vs_quarter": round(mds_rss / small_rss, 2),
            "mds_peak_rss_mb": round(mds_rss),
        }

    def find(self, name: str) -> dict:
        return next(r for r in self.rows if r["row"] == name)

    def loaders(self, data: Path) -> None:
        """Samples per second through a DataLoader with 2 workers: MDS vs an ImageFolder tree, and the
    ImageNetMDS loader with its training transform."""
        n = min(4000, self.images // 2)
        self.stage("untar.py", self.root / f"fixture-{self.images}" / "config.yaml", data, "train",
                   "--workers", str(self.workers))
        for decode, kind in ((False, "mds"), (False, "folder"), (True, "mds"), (True, "folder"), (True, "loader")):
            code = (f"import sys; sys.path.insert(0, {str(SCRIPTS)!r}); import bench; "
                    f"bench.loader_rate({str(data)!r}, {kind!r}, {decode}, {n})")
            seconds, rss, _ = timed([PY, "-c", code])
            rate = json.loads((data / "loader.json").read_text())
            what = "decoded to RGB" if decode else "raw bytes"
            if kind == "loader":
                kind, what = "ImageNetMDS", "decoded + train transform"
            self.rows.append({"row": f"loader {kind} {what} (2 workers)", "seconds": round(seconds, 3),
                              "work_seconds": rate["seconds"], "samples_s": rate["samples_s"],
                              "peak_rss_mb": round(rss), "bytes": None, "mb_s": None, "x_copy": None,
                              "note": f"{n} samples"})
            log(f"[bench] loader {kind} {what}: {rate['samples_s']} samples/s")


def loader_rate(data: str, kind: str, decode: bool, n: int) -> None:
    """Read `n` samples of the train split with a DataLoader(num_workers=2); writes data/loader.json."""
    import io

    from PIL import Image
    from torch.utils.data import DataLoader, Dataset, Subset

    def load(raw: bytes) -> int:
        return Image.open(io.BytesIO(raw)).convert("RGB").size[0] if decode else len(raw)

    if kind == "loader":
        from imagenet.loader import ImageNetMDS

        ds: Dataset = ImageNetMDS(local=f"{data}/mds", split="train", batch_size=64, shuffle=False)
        collate = None
    elif kind == "mds":
        from streaming import StreamingDataset
        from streaming.base.util import clean_stale_shared_memory

        clean_stale_shared_memory()

        class Raw(StreamingDataset):
            def __getitem__(self, i: int) -> int:
                x = super().__getitem__(i)["x"]
                return x.convert("RGB").size[0] if decode else len(x.fp.getvalue())

        ds = Raw(local=f"{data}/mds/ILSVRC2012_img_train", remote=None, shuffle=False, batch_size=64)
        collate = list
    else:
        from torchvision.datasets import ImageFolder

        ds = ImageFolder(f"{data}/untar/ILSVRC2012_img_train", loader=lambda p: load(Path(p).read_bytes()))
        collate = list
    loader = DataLoader(Subset(ds, range(min(n, len(ds)))), batch_size=64, num_workers=2, collate_fn=collate)
    t0 = time.perf_counter()
    count = sum(len(b) if collate else len(b[1]) for b in loader)  # default collate: [images, ys]
    seconds = time.perf_counter() - t0
    write_json(Path(data) / "loader.json", {"seconds": round(seconds, 3), "samples_s": round(count / seconds)})


def table(rows: list[dict]) -> str:
    lines = ["| row | seconds | MB/s | x copy floor | peak RSS MB |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        rate = f"{r['samples_s']} samples/s" if "samples_s" in r else r["mb_s"]
        lines.append(f"| {r['row']} | {r['work_seconds']:.2f} | {rate} | {r['x_copy'] or '-'} | "
                     f"{r['peak_rss_mb'] if r['peak_rss_mb'] is not None else '-'} |")
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


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", type=Path, default=PROJECT / "data")
    p.add_argument("--images", type=int, default=13600, help="images in the fixture (about 110 KB each)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeat", type=int, default=2, help="runs of each row; the fastest counts")
    args = p.parse_args()
    t0 = time.time()
    bench = Bench(args.data.resolve() / "bench", args.images, args.workers, args.repeat)
    cold = drop_caches()
    bench.run()
    reports = args.data.resolve() / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, {shutil.disk_usage(reports).total // 10**9} GB disk"
    result = {"machine": machine, "caches_dropped": cold, "images": args.images, "workers": args.workers,
              "repeat": args.repeat,
              "rows": bench.rows, "summary": bench.summary}
    write_json(reports / "bench.json", result)
    chart(bench.rows, reports / "bench.png")
    print(f"bench on {machine}; {args.images} images; caches {'dropped' if cold else 'warm'}; "
          f"fastest of {args.repeat} runs per row; "
          f"took {time.time() - t0:.0f} s\n")
    print(table(bench.rows))
    print("\n" + "\n".join(f"- {k}: {v}" for k, v in bench.summary.items()))
    print(f"\nwritten: {reports / 'bench.json'}, {reports / 'bench.png'}")


if __name__ == "__main__":
    main(run)
