"""What an mds worker sends back: typed results, and the one exception the stage raises for each problem."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.mds.workers import (
    Changed,
    Crashed,
    DiskError,
    Failed,
    ImageChanged,
    Refused,
    problem_of,
)


def sent(e: BaseException, out: Path) -> Failed:
    """What the worker puts on its queue when `e` stops it, through the pickling the queue does."""
    try:
        raise e
    except BaseException as caught:
        return pickle.loads(pickle.dumps(Failed("00000", problem_of(caught, out))))


def test_a_workers_problem_travels_typed_and_becomes_one_exception_in_the_parent(tmp_path: Path):
    changed = sent(Changed("member x is not the image verify read", ("n01440764", "x.JPEG")), tmp_path).problem
    assert isinstance(changed, ImageChanged) and changed.image == ("n01440764", "x.JPEG")
    error = changed.error("val", None, "00000")
    assert isinstance(error, Changed) and error.image == ("n01440764", "x.JPEG")
    refused = sent(UserError("not a readable image"), tmp_path).problem
    assert refused == Refused("not a readable image") and str(refused.error("val", None, "00000")) == refused.message
    full = sent(OSError(errno.ENOSPC, "No space left on device"), tmp_path).problem
    assert full == DiskError(errno.ENOSPC, "No space left on device", str(tmp_path))  # where it was writing
    for remote in (None, "s3://bucket/mds"):  # the disk's, even while uploading: the full-disk line
        assert isinstance(e := full.error("val", remote, "00000"), OSError) and e.errno == errno.ENOSPC
    reset = sent(OSError(errno.ECONNRESET, "Connection reset", "shard.00000.mds"), tmp_path).problem
    assert str(reset.error("val", "s3://bucket/mds", "00000")) == (
        "uploading val to s3://bucket/mds failed: OSError: Connection reset (shard.00000.mds); check REMOTE, the "
        "credentials and the endpoint, then run the same command again")
    bug = sent(ValueError("a bug"), tmp_path).problem
    assert isinstance(bug, Crashed) and "ValueError: a bug" in bug.traceback
    assert isinstance(e := bug.error("val", None, "00003"), RuntimeError) and "mds worker 00003 failed" in str(e)
    assert "failed: ValueError: a bug; check REMOTE" in str(bug.error("val", "s3://bucket/mds", "00003"))
