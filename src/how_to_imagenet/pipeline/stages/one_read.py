"""verify then mds in one read of the archive, for a run whose goal is the shards (`make val`,
`make all`, `make mds-<split>` on an archive not yet verified; make passes verify --then-mds).

verify reads the archive once, hashing it and indexing its images. As soon as every image is
indexed, while the slower whole-archive hashes are still at work, mds's workers write the shards
into the dataset's `.partial` folder, reading each image by offset from the pages verify has just
read. Nothing becomes visible as done before the hashes pass: the index and verify's stamp are
written only then, and the `.partial` folder is renamed and mds's stamp written after that. An
archive that fails its hashes (or anything verify refuses) leaves exactly what a failed verify
leaves: the `.partial` folder is removed. Every sample is still compared with the hash verify
recorded for its image (the workers' per-image proof).

mds runs separately, after verify, where writing while verify reads would show something before
the hashes pass (REMOTE: the shards are uploaded as written) or could not follow it (MDS_FROM=untar),
or where the dataset already has a stamp (mds decides by its own rule whether to write it again).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from ..cli import worker_count
from ..config import Split
from ..console import log
from ..context import Context
from ..files import building
from ..index import Image
from ..mds.workers import Written
from ..reader import Source
from ..stage import stage
from .download import needed_archive
from .mds import convert, finish, settings
from .verify import verify


def verify_then_mds(ctx: Context, split: Split) -> None:
    """Bring verify up to date and, where it runs and may, mds with it in the same read (above)."""
    verify_stage, mds_stage = stage("verify"), stage("mds")
    o = ctx.options
    if o.source != "tar" or o.remote or mds_stage.stamp(ctx, split) is not None:
        return verify_stage.bring_up_to_date(ctx, split, lambda: verify(ctx, split))
    with Following(ctx, split) as following:
        verify_stage.bring_up_to_date(ctx, split, lambda: verify(ctx, split, following))
        if following.written is not None:
            mds_stage.bring_up_to_date(ctx, split, following.commit)


class Following:
    """mds's work as a `verify.Follower`: `start` writes the shards into `.partial`, `commit` (once
    verify's stamp is written) renames it and returns mds's outputs, `discard` removes it. Leaving
    the block without `commit` discards."""

    def __init__(self, ctx: Context, split: Split) -> None:
        self.ctx, self.split = ctx, split
        o = ctx.options
        self.s = settings(ctx.cfg, o.resize, o.quality, o.remote)
        self.workers = worker_count(o.workers, cpu_bound=self.s.resize is not None)
        self.images: list[Image] = []
        self.written: list[Written] | None = None
        self.partial = ExitStack()  # holds `building`'s block open: closed whole, it renames the folder

    def start(self, images: list[Image]) -> None:
        """Write the shards into `.partial`. A failure here is mds's own (a full disk, a worker that
        died): the folder is removed, verify goes on, and make's mds step runs mds on its own, which
        says what is wrong in its own words."""
        ctx, split = self.ctx, self.split
        tar = needed_archive(ctx.paths, split)
        out = ctx.paths.mds(split.name, self.s.resize)
        if not out.parent.exists():  # made here: removed with the shards if they are discarded
            self.partial.callback(lambda: out.parent.rmdir() if not any(out.parent.iterdir()) else None)
        try:
            tmp = self.partial.enter_context(building(out))
            self.written = convert(ctx, split, images, Source(tar=tar), sum(i.size for i in images), self.workers,
                                   self.s, tmp)
            self.images = images
            log(f"[mds {split.name}] {len(images)} images written during verify's read: kept once its hashes pass")
        except Exception as e:
            self.discard()
            log(f"[mds {split.name}] not written during verify ({str(e).splitlines()[0]}): it runs after verify")

    def commit(self) -> dict[str, Any]:
        """Rename `.partial` to the dataset (verify's stamp is written: the hashes passed); mds's outputs."""
        written, self.written = self.written, None
        assert written is not None
        self.partial.close()
        return finish(self.ctx, self.split, self.images, written, self.s, "tar")

    def discard(self) -> None:
        """Remove `.partial` (nothing of it shown as done)."""
        self.written = None
        block, self.partial = self.partial, ExitStack()
        block.__exit__(Discarded, Discarded(), None)  # `building` removes the folder on an error

    def __enter__(self) -> Following:
        return self

    def __exit__(self, *_: object) -> None:
        if self.written is not None:
            self.discard()


class Discarded(Exception):
    """What ends `building`'s block when the shards written during verify are not kept."""
