"""make bench's rows where the disk is the limit: the fixture's archives read through a mount that serves
at most READ_LIMIT MB/s (throttled_fs), slower than this machine's disk and than one core's sha256, so
that reading is the bottleneck as on a spinning or network disk. verify is set against cat on the
same mount; mds of the verified train tar against verify --then-mds (one read) of the downloaded one,
which then writes the shards to the bench's own (faster) disk after the read."""

from __future__ import annotations

import contextlib
import subprocess
from typing import TYPE_CHECKING

import throttled_fs

from how_to_imagenet.names import archive
from how_to_imagenet.pipeline.console import log
from how_to_imagenet.pipeline.files import remove
from how_to_imagenet.pipeline.layout import Paths

if TYPE_CHECKING:
    from bench import Bench

READ_LIMIT = 300  # MB/s: a third of what cat reads from this machine's disk, a fifth of one core's sha256


def rows(bench: Bench) -> None:
    """Add the read-limited rows and their ratios to `bench`; where no mount can be made, say why."""
    from bench import STAGE, checked, timed

    if why := throttled_fs.usable():
        log(f"[bench] no read-limited rows: {why}")
        return
    fixture = bench.root / f"fixture-{bench.images}"
    data = bench.root / "data-read-limited"
    remove(data)
    with contextlib.ExitStack() as stack:
        try:
            mount = stack.enter_context(throttled_fs.mounted(fixture, bench.root / "read-limited", READ_LIMIT))
        except OSError as e:  # the mount refused (the reason in the server's words)
            log(f"[bench] no read-limited rows: {str(e).splitlines()[-1] if str(e) else e!r}")
            return
        config, tar = mount / "config.yaml", mount / archive("train")
        size = tar.stat().st_size
        cat = bench.best(lambda: timed(["bash", "-c", f"cat '{tar}' > /dev/null"])).seconds
        where = f"read-limited disk ({READ_LIMIT} MB/s)"
        bench.row(f"{where}: cat > /dev/null", size, cat, vs_copy=False)
        subprocess.run([*STAGE, "download", "--config", str(config), "--data", str(data), "train"], check=True,
                       capture_output=True)
        s, rss, verify = bench.stage("verify", config, data, "train")
        bench.row(f"{where}: verify train: {checked(Paths(data), 'train')} + index", size, s, rss, verify,
                  note=f"{verify / cat:.2f}x cat", vs_copy=False)
        s, rss, mds = bench.stage("mds", config, data, "train", *bench.workers_args(None),
                                  output=Paths(data).mds("train"))
        bench.row(f"{where}: verified tar to MDS: mds train", size, s, rss, mds, vs_copy=False)
        s, one = bench.one_read(config, data, "train")
        bench.row(f"{where}: downloaded tar to MDS: verify --then-mds train (one read)", size, s, None, one,
                  note=f"{one / mds:.2f}x mds of the verified tar", vs_copy=False)
    remove(data)
    bench.summary.update({"read_limited_verify_x_read": round(verify / cat, 2),
                          "read_limited_downloaded_vs_verified_tar_to_mds": round(one / mds, 2)})
