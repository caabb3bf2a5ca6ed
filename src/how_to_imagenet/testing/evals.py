"""The test sets in their real layouts, tiny: ImageNetV2's three tars of number folders (named .tar.gz,
plain tar inside, as the published ones are reported to be), ImageNet-A and -R's tars of wnid folders
with a README.txt, and ImageNet-Sketch's zip (stored and deflated members); a few images in a few
classes, the first and the last wnid among them. Every image's right `y` is known here (`expected`).

Deterministic: the same call writes the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import random
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from ..labels import class_index, wnids
from .fixture import fake_photo

MTIME = 1_335_830_400
# Class indices of each set's folders: V2's include 2, 10 and 100, which string order puts elsewhere.
V2_CLASSES = (0, 1, 2, 10, 100, 999)
AR_CLASSES = (0, 6, 500, 999)  # A and R hold 200 classes, not all 1000: here 4
SKETCH_CLASSES = (0, 1, 2, 999)
PER_CLASS = 2
V2 = ("imagenet-v2-matched-frequency", "imagenet-v2-threshold0.7", "imagenet-v2-top-images")


def tar_with_folders(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A GNU tar of these files, each folder's directory member before its first file (as tar -c writes);
    a name ending in "/" is a folder alone."""
    buf, seen = io.BytesIO(), set()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data in members:
            parts = name.rstrip("/").split("/")[: None if name.endswith("/") else -1]
            for k in range(1, len(parts) + 1):
                folder = "/".join(parts[:k])
                if folder not in seen:
                    seen.add(folder)
                    info = tarfile.TarInfo(folder + "/")
                    info.type, info.mtime, info.mode = tarfile.DIRTYPE, MTIME, 0o755
                    tar.addfile(info)
            if name.endswith("/"):
                continue
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: Iterable[tuple[str, bytes]], deflate: bool = True, zip64: bool = False) -> bytes:
    """A zip of these files, every other one deflated (`deflate`), the rest stored; folders get members
    of their own, as `zip -r` writes them. `zip64`: every record that can be zip64 is (zipfile's limits
    lowered while it writes), as in an archive over 4 GiB such as ImageNet-Sketch's."""
    buf, seen = io.BytesIO(), set()
    limits = zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT
    if zip64:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = 1, 1  # type: ignore[attr-defined]
    try:
        return _zip(buf, seen, members, deflate, zip64)
    finally:
        zipfile.ZIP64_LIMIT, zipfile.ZIP_FILECOUNT_LIMIT = limits  # type: ignore[attr-defined]


def _zip(buf: io.BytesIO, seen: set[str], members: Iterable[tuple[str, bytes]], deflate: bool, zip64: bool) -> bytes:
    with zipfile.ZipFile(buf, "w") as z:
        for n, (name, data) in enumerate(members):
            parts = name.split("/")[:-1]
            for k in range(1, len(parts) + 1):
                folder = "/".join(parts[:k]) + "/"
                if folder not in seen:
                    seen.add(folder)
                    z.writestr(zipfile.ZipInfo(folder, (2012, 5, 1, 0, 0, 0)), b"")
            info = zipfile.ZipInfo(name, (2012, 5, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED if deflate and n % 2 else zipfile.ZIP_STORED
            with z.open(info, "w", force_zip64=zip64) as f:
                f.write(data)
    return buf.getvalue()


def members(split: str, photo: random.Random) -> list[tuple[str, bytes]]:
    """The archive's files in archive order (not sorted: mds orders them by y, then name)."""
    def img() -> bytes:
        return fake_photo(photo)

    if split in V2:
        top = f"imagenetv2-{split.removeprefix('imagenet-v2-')}-format-val"
        out = [(f"{top}/{c}/{hashlib.sha1(f'{split}{c}{k}'.encode()).hexdigest()}.jpeg", img())
               for c in reversed(V2_CLASSES) for k in range(PER_CLASS)]
        return out
    if split in ("imagenet-a", "imagenet-r"):
        readme = f"{split}: {len(AR_CLASSES)} classes of the fixture\n".encode()
        out = [(f"{split}/README.txt", readme)]
        out += [(f"{split}/{wnids()[c]}/{'art' if split == 'imagenet-r' else '0.00' + str(k)}_{PER_CLASS - k}.jpg",
                 img()) for c in AR_CLASSES for k in range(PER_CLASS)]
        return out
    return [(f"sketch/{wnids()[c]}/sketch_{PER_CLASS - k}.JPEG", img()) for c in SKETCH_CLASSES
            for k in range(PER_CLASS)]


ARCHIVES = {"imagenet-v2-matched-frequency": "imagenetv2-matched-frequency.tar.gz",
            "imagenet-v2-threshold0.7": "imagenetv2-threshold0.7.tar.gz",
            "imagenet-v2-top-images": "imagenetv2-top-images.tar.gz", "imagenet-a": "imagenet-a.tar",
            "imagenet-r": "imagenet-r.tar", "imagenet-sketch": "ImageNet-Sketch.zip"}
LAYOUTS = {**dict.fromkeys(V2, "number_folders"), "imagenet-a": "wnid_folders", "imagenet-r": "wnid_folders",
           "imagenet-sketch": "wnid_folders"}


def archive_bytes(split: str, files: list[tuple[str, bytes]]) -> bytes:
    return zip_bytes(files) if split == "imagenet-sketch" else tar_with_folders(files)


def expected(split: str, files: list[tuple[str, bytes]]) -> list[tuple[int, str, bytes]]:
    """(y, file name, bytes) of every image in the order mds writes them: by y, then file name. y is the
    class index among the 1000 (V2's folder number is one; A, R and Sketch's wnid folders give one)."""
    out = []
    for name, data in files:
        _, *rest = name.split("/")
        if len(rest) != 2:
            continue  # README.txt
        folder, file = rest
        out.append((int(folder) if split in V2 else class_index()[folder], file, data))
    return sorted(out, key=lambda e: (e[0], e[1]))


def add_evals(root: Path, config: Path, url: str | None, seed: int = 7) -> tuple[Path, dict]:
    """Write the six archives into `root` beside the fixture whose config is `config`, and a config
    `config-evals.yaml` holding its splits and the six (sources: `url` + archive, served by the fixture's
    web seed; or the local files); the checksums go in a folder of their own. The config, and each
    split's `expected` images."""
    photo = random.Random(seed)
    cfg = yaml.safe_load(config.read_text())
    sums = root / "checksums-evals"
    sums.mkdir(exist_ok=True)
    old = root / cfg["checksums"]
    lines = (old / "SHA256SUMS").read_text() if (old / "SHA256SUMS").exists() else ""
    truth = {}
    for split, name in ARCHIVES.items():
        files = members(split, photo)
        path = root / name
        path.write_bytes(archive_bytes(split, files))
        lines += f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {name}\n"
        truth[split] = expected(split, files)
        cfg["splits"][split] = {"archive": name, "source": url + name if url else name,
                                "bytes": path.stat().st_size, "images": len(truth[split]), "layout": LAYOUTS[split]}
    (sums / "SHA256SUMS").write_text(lines)
    cfg["checksums"] = sums.name
    out = root / "config-evals.yaml"
    out.write_text("# The fixture with the test sets, written by how_to_imagenet.testing.evals; loopback only.\n"
                   + yaml.safe_dump(cfg, sort_keys=False))
    return out, truth
