"""Where everything goes under DATA: the one owner of every file and folder name, stage name and
suffix. Stage scripts, status, clean, bench and the tests all ask a `Paths` rather than spell a name.

    DATA/tar/<archive>                     the download (+ <archive>.aria2 while incomplete)
    DATA/index/ILSVRC2012_img_<split>.tsv  where each image's bytes are in the archive (verify)
    DATA/untar/ILSVRC2012_img_<split>/     ImageFolder tree (untar)
    DATA/mds/ILSVRC2012_img_<split>[_r<N>]/  MDS dataset (mds; _r<N> with RESIZE=N)
    DATA/reports/<split>.<kind>.json       mds and check reports
    DATA/.stamps/<split>.<stage>           a stage's stamp, written last
    DATA/.lock                             held by the running stage
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..names import dataset, variant

PARTIAL = ".partial"  # an output being built; renamed into place when complete
CONTROL = ".aria2"  # aria2c's control file beside an incomplete download
ASIDE = ".corrupt"  # a damaged archive moved aside
DEMO_MARKER = ".how-to-imagenet-demo"  # written by make demo in its folder: the only folder it may empty


def partial(path: Path) -> Path:
    return path.with_name(path.name + PARTIAL)


def mds_stage(resize: int | None) -> str:
    """The stage writing the full-size dataset (mds) or the RESIZE=N one (mds_r<N>)."""
    return "mds" + variant(resize)


def is_mds_stage(name: str) -> bool:
    """`name` is what `mds_stage` gives for some RESIZE (or none)."""
    n = name.removeprefix(mds_stage(None) + variant(1)[:-1])
    return name == mds_stage(None) or (n != name and n.isdigit() and name == mds_stage(int(n)))


@dataclass(frozen=True)
class Paths:
    data: Path

    def rel(self, path: Path) -> str:
        """How stamps and reports name a file: relative to DATA, so DATA can move."""
        return str(path.relative_to(self.data)) if path.is_relative_to(self.data) else str(path)

    def at(self, name: str) -> Path:
        """The file a stamp or report names (relative to DATA; an absolute name stays as it is)."""
        return self.data / name

    @property
    def stamps(self) -> Path:
        return self.data / ".stamps"

    @property
    def lock(self) -> Path:
        return self.data / ".lock"

    def stamp(self, split: str, stage: str) -> Path:
        return self.stamps / f"{split}.{stage}"

    def stamped(self, split: str) -> list[str]:
        """The stages of `split` that have a stamp file (readable or not)."""
        return sorted(p.name.removeprefix(f"{split}.") for p in self.stamps.glob(f"{split}.*"))

    def tar(self, archive: str) -> Path:
        """A downloaded archive, by its file name (splits.<split>.archive)."""
        return self.data / "tar" / archive

    def control(self, tar: Path) -> Path:
        """aria2c's control file, kept while a download is incomplete."""
        return tar.with_name(tar.name + CONTROL)

    def aside(self, tar: Path, n: int = 0) -> Path:
        """Where a damaged archive is moved: <archive>.corrupt, then .corrupt.1, ..."""
        return tar.with_name(tar.name + ASIDE + (f".{n}" if n else ""))

    def index(self, split: str) -> Path:
        """Where each image's bytes are in the archive, written by verify."""
        return self.data / "index" / f"{dataset(split)}.tsv"

    def untar(self, split: str) -> Path:
        return self.data / "untar" / dataset(split)

    @property
    def mds_root(self) -> Path:
        """The folder ImageNetMDS(local=...) takes: it holds every split's datasets."""
        return self.data / "mds"

    def mds(self, split: str, resize: int | None = None) -> Path:
        return self.mds_root / dataset(split, resize)

    def resizes(self, split: str) -> list[int]:
        """The N of every RESIZE dataset of `split` on disk, finished or partial."""
        prefix = f"{dataset(split)}_r"
        names = {f.name.removesuffix(PARTIAL).removeprefix(prefix) for f in self.mds_root.glob(f"{prefix}*")}
        return sorted(int(n) for n in names if n.isdigit())

    def report(self, split: str, kind: str) -> Path:
        return self.data / "reports" / f"{split}.{kind}.json"

    def check_report(self, split: str, resize: int | None = None) -> Path:
        """What make check wrote of a split's dataset (full size or RESIZE=N)."""
        return self.report(split, "check" + variant(resize))

    def untar_check_report(self, split: str) -> Path:
        """What make check found of a split's ImageFolder tree (not a `<split>.check*` report: those are of shards)."""
        return self.report(split, "untar-check")

    def reports(self, split: str) -> list[Path]:
        return sorted((self.data / "reports").glob(f"{split}.*.json"))

    def cache(self, split: str, resize: int | None = None) -> Path:
        """A fresh local copy of a remote dataset, for make check REMOTE=..."""
        return self.data / "cache" / dataset(split, resize)
