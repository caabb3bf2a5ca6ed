"""make bench's rows for the test sets' archives: mds from a zip read by member offset (ImageNet-Sketch's
layout, half the members deflated) and from a tar of class folders (ImageNet-R's), each timed as the
train rows are (cold cache, the stage's own time plus the sync) and set against the same copy floor."""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from how_to_imagenet.labels import wnids
from how_to_imagenet.pipeline.console import log
from how_to_imagenet.pipeline.files import remove
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.evals import tar_with_folders, zip_bytes
from how_to_imagenet.testing.fixture import bench_photos

CLASSES = 100
STAGE = [sys.executable, "-m", "how_to_imagenet.pipeline"]
SETS = {  # split: (archive, how its bytes are made, the row's words)
    "imagenet-sketch": ("ImageNet-Sketch.zip", zip_bytes, "zip, half the members deflated"),
    "imagenet-r": ("imagenet-r.tar", tar_with_folders, "tar of class folders"),
}


def fixture(root: Path, images: int, mds: dict[str, Any]) -> Path:
    """Both archives, `images` photos each over CLASSES classes, and a config naming them (local files)."""
    config = root / "config.yaml"
    if config.exists():
        return config
    remove(root)
    root.mkdir(parents=True)
    log(f"[bench] building the test-set archives of {images} images each in {root}")
    pool = bench_photos(random.Random(3))
    classes = wnids()[:: 1000 // CLASSES]
    splits, sums = {}, []
    for split, (name, make, _) in SETS.items():
        top = "sketch" if split == "imagenet-sketch" else split
        files = [(f"{top}/{classes[n % CLASSES]}/{split}_{n}.JPEG", pool[n % len(pool)]) for n in range(images)]
        path = root / name
        path.write_bytes(make(files))
        sums.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n")
        splits[split] = {"archive": name, "source": name, "bytes": path.stat().st_size, "images": images}
    (root / "checksums").mkdir()
    (root / "checksums" / "SHA256SUMS").write_text("".join(sums))
    config.write_text(yaml.safe_dump({"data_dir": "data", "checksums": "checksums", "splits": splits, "mds": mds,
                                      "aria2c_args": []}))
    return config


def rows(bench: Any) -> None:
    """Add the two rows to `bench` (tools/bench.py's Bench): verify each archive, then time its mds."""
    config = fixture(bench.root / f"evals-{bench.images // 4}", max(CLASSES, bench.images // 4), bench.project_mds)
    data = bench.root / "data-evals"
    remove(data)
    for split, (name, _, words) in SETS.items():
        for stage in ("download", "verify"):
            subprocess.run([*STAGE, stage, "--config", str(config), "--data", str(data), split], check=True,
                           capture_output=True)
        nbytes = (config.parent / name).stat().st_size
        s, rss, work = bench.stage("mds", config, data, split, *bench.workers_args(None),
                                   output=Paths(data).mds(split))
        bench.row(f"mds {split} from a {words} ({bench.label(None, False)})", nbytes, s, rss, work)
    remove(data)
