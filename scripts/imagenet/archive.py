"""The two ILSVRC2012 image archives, one function per kind (as torchvision's datasets/imagenet.py):

- train: an outer tar of 1000 `<wnid>.tar` class tars, each of `<wnid>_<n>.JPEG`;
- val: one flat tar of 50,000 `ILSVRC2012_val_XXXXXXXX.JPEG`, labelled by meta/ilsvrc2012_val_labels.txt.

Both become a torchvision ImageFolder tree `<out>/<wnid>/<file>`. Extraction is GNU tar's.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from tqdm import tqdm

from .core import UserError
from .labels import class_index, val_wnid

TAR_ARGS = ["--no-same-owner", "--no-same-permissions", "--no-overwrite-dir"]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def extract(tar: Path, dest: Path, desc: str | None = None) -> None:
    """GNU tar extracts `tar` into `dest`; with `desc`, the archive is fed through a pipe under a progress bar."""
    cmd = ["tar", "-x", "-f", "-" if desc else str(tar), "-C", str(dest), *TAR_ARGS]
    if desc is None:
        done = subprocess.run(cmd, capture_output=True, text=True)
        rc, err = done.returncode, done.stderr
    else:
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=False) as proc, \
                open(tar, "rb") as f, tqdm(total=tar.stat().st_size, unit="B", unit_scale=True,
                                           unit_divisor=1000, desc=desc, mininterval=0.5) as bar:
            assert proc.stdin is not None and proc.stderr is not None
            try:
                while chunk := f.read(1 << 20):
                    proc.stdin.write(chunk)
                    bar.update(len(chunk))
                proc.stdin.close()
            except BrokenPipeError:
                pass
            err = proc.stderr.read().decode(errors="replace")
            rc = proc.wait()
    if rc != 0:
        first = err.strip().splitlines()[0] if err.strip() else f"exit code {rc}"
        raise UserError(f"{tar}: GNU tar could not extract it ({first})")


def untar_val(tar: Path, out: Path) -> dict[str, int]:
    """Extract the flat val tar into `out`, then move each image into its ground-truth class folder."""
    extract(tar, out, "untar val")
    counts: dict[str, int] = {}
    for entry in sorted(os.scandir(out), key=lambda e: e.name):
        wnid = val_wnid(entry.name) if entry.is_file(follow_symlinks=False) else None
        if wnid is None:
            raise UserError(f"{tar}: member {entry.name!r} is not a labelled val image "
                            "(ILSVRC2012_val_XXXXXXXX.JPEG with a line in meta/ilsvrc2012_val_labels.txt)")
        (out / wnid).mkdir(exist_ok=True)
        os.rename(entry.path, out / wnid / entry.name)
        counts[wnid] = counts.get(wnid, 0) + 1
    return dict(sorted(counts.items()))


def untar_train(tar: Path, out: Path) -> dict[str, int]:
    """Extract the outer train tar into `out`, then each class tar into `<out>/<wnid>/`, deleting it."""
    extract(tar, out, "untar train")
    known = class_index()
    counts: dict[str, int] = {}
    for entry in tqdm(sorted(os.scandir(out), key=lambda e: e.name), desc="class tars", unit="class"):
        wnid = entry.name.removesuffix(".tar")
        if not entry.is_file(follow_symlinks=False) or not entry.name.endswith(".tar") or wnid not in known:
            raise UserError(f"{tar}: member {entry.name!r} is not a class tar '<wnid>.tar' of a known wnid")
        dest = out / wnid
        dest.mkdir()
        extract(Path(entry.path), dest)
        os.unlink(entry.path)
        image = re.compile(rf"{wnid}_\d+\.JPEG")
        for f in os.scandir(dest):
            if not (f.is_file(follow_symlinks=False) and image.fullmatch(f.name)):
                raise UserError(f"{tar}: member {entry.name}/{f.name} is not a {wnid}_<n>.JPEG image")
        counts[wnid] = len(os.listdir(dest))
    return counts


def image_folder(root: Path) -> list[tuple[Path, str]]:
    """(path, wnid) of every image in ImageFolder order: classes sorted, then files sorted by name."""
    samples = []
    for cls in sorted(e.name for e in os.scandir(root) if e.is_dir()):
        files = sorted(f.name for f in os.scandir(root / cls) if f.name.lower().endswith(IMAGE_EXTENSIONS))
        samples += [(root / cls / f, cls) for f in files]
    return samples
