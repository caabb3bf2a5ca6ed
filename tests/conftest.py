"""Shared fixtures: the ImageNet-shaped fixture built once per session in a temporary folder and
served on 127.0.0.1 as its torrents' web seed, and helpers that drive the real interface (make)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from imagenet.core import PROJECT
from imagenet.fixture import build
from imagenet.webseed import serve

# Nested under `make test`, the inner makes must not inherit the outer one's flags and job server.
ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
ENV["IMAGENET_LOOPBACK_ONLY"] = "1"
VENV = Path(sys.executable).parent.parent


def make(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `make ARGS` in the project, as a user would; output captured as text."""
    cmd = ["make", "--no-print-directory", f"VENV={VENV}", *args]
    done = subprocess.run(cmd, cwd=PROJECT, capture_output=True, text=True, env={**ENV, **(env or {})})
    if check and done.returncode != 0:
        raise AssertionError(f"make {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@dataclass
class Fixture:
    root: Path
    config: Path
    url: str

    def variant(self, name: str, **changes: object) -> Path:
        """A copy of the fixture config beside it (so relative paths still hold) with `changes`
        applied; keys are dotted paths, e.g. `**{"mds.size_limit": 4096}`."""
        raw = yaml.safe_load(self.config.read_text())
        for dotted, value in changes.items():
            *parents, leaf = dotted.split(".")
            node = raw
            for p in parents:
                node = node[p]
            node[leaf] = value
        path = self.root / f"config-{name}.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return path

    def members(self, split: str) -> dict[str, bytes]:
        """Image file name -> bytes, read straight from the fixture archive with tarfile."""
        out = {}
        with tarfile.open(self.root / f"ILSVRC2012_img_{split}.tar") as tar:
            for m in tar:
                data = tar.extractfile(m).read()
                if split == "train":
                    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
                        out.update({i.name: inner.extractfile(i).read() for i in inner})
                else:
                    out[m.name] = data
        return out


@pytest.fixture(scope="session")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    root = tmp_path_factory.mktemp("fixture")
    server = serve(root)
    url = f"http://127.0.0.1:{server.server_port}/"
    yield Fixture(root=root, config=build(root, url), url=url)
    server.shutdown()


@pytest.fixture(scope="session")
def built(fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA after `make all folders` on the fixture (both splits, every stage); tests must not change it."""
    data = tmp_path_factory.mktemp("data")
    make("all", "folders", f"CONFIG={fixture.config}", f"DATA={data}")
    return data


def copy_data(src: Path, dst: Path) -> Path:
    """A copy of a DATA folder with its timestamps, so Make sees the same state."""
    shutil.copytree(src, dst, symlinks=True)
    return dst


def read_mds(local: Path) -> list[dict]:
    """Every sample of an MDS folder, read with an unmodified StreamingDataset; `raw` is the byte
    string the `x` image was decoded from (PIL keeps the BytesIO it was opened from)."""
    from streaming import StreamingDataset
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    ds = StreamingDataset(local=str(local), remote=None, shuffle=False, batch_size=1)
    samples = []
    for i in range(len(ds)):
        s = ds[i]
        samples.append({**s, "raw": s["x"].fp.getvalue()})
    return samples


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    """A larger fixture (about 220 MB of 110 KB JPEGs, local sources), so a stage runs long enough
    to be interrupted in the middle."""
    import random

    from imagenet.fixture import bench_photos
    from imagenet.labels import wnids

    root = tmp_path_factory.mktemp("big")
    config = build(root, seed=2, wnids=wnids()[::50], train_per_class=100, val_per_class=5,
                   photos=bench_photos(random.Random(2), 16),
                   mds={"size_limit": 1 << 22, "shuffle_seed": 0, "hashes": ["xxh64"]})
    return Fixture(root=root, config=config, url="")


def craft(members: list[tuple[str, bytes] | tarfile.TarInfo | bytes]) -> bytes:
    """Tar bytes with exactly these members: (name, data) files, TarInfo headers (links, devices,
    odd modes; regular ones get `size` bytes of data), or raw bytes appended as they are."""
    out = bytearray()
    for m in members:
        if isinstance(m, bytes):
            out += m
            continue
        if isinstance(m, tuple):
            info = tarfile.TarInfo(m[0])
            info.size, info.mode, data = len(m[1]), 0o644, m[1]
        else:
            info, data = m, b"x" * m.size if m.isreg() else b""
        out += info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape") + data
        out += bytes(-len(data) % 512)
    return bytes(out + bytes(1024))


def custom(root: Path, split: str, archive: bytes, images: int) -> Path:
    """A config whose only split is `split`, with `archive` as its local source, and its real checksum."""
    from imagenet.fixture import hexdigests

    root.mkdir(parents=True, exist_ok=True)
    tar = root / f"ILSVRC2012_img_{split}.tar"
    tar.write_bytes(archive)
    (root / "checksums").mkdir(exist_ok=True)
    (root / "checksums" / "SHA256SUMS").write_text(f"{hexdigests(tar)['sha256']}  {tar.name}\n")
    config = {"data_dir": "data", "checksums": "checksums",
              "splits": {split: {"archive": tar.name, "source": tar.name, "bytes": tar.stat().st_size,
                                 "images": images}},
              "mds": {"size_limit": 1 << 16, "shuffle_seed": 0, "hashes": ["xxh64"]}, "aria2c_args": []}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
