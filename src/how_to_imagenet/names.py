"""The names the library and the pipeline share: a dataset's folder name, and a RESIZE variant's suffix.

Everything else about where files go belongs to `pipeline.layout.Paths`; these two live here because
the loader, which ships without the pipeline's needs, reads the same folders.
"""

from __future__ import annotations

SPLITS = ("train", "val")  # ILSVRC2012's own: their folders are named after the archive (ILSVRC2012_img_<split>)
# The test sets researchers report beside val (data/eval_archives.tsv): their folders are named after the split.
EVAL_SPLITS = ("imagenet-v2-matched-frequency", "imagenet-v2-threshold0.7", "imagenet-v2-top-images", "imagenet-a",
               "imagenet-r", "imagenet-sketch")
ARCHIVE_STEM = "ILSVRC2012_img_"  # ILSVRC2012_img_train.tar, and every folder made from it


def variant(resize: int | None) -> str:
    """The suffix of a low-resolution dataset made with RESIZE: folder ILSVRC2012_img_<split>_r<N>,
    stage mds_r<N>, report <split>.check_r<N>.json; empty for the full-size dataset."""
    return f"_r{resize}" if resize else ""


def archive(split: str) -> str:
    """The archive's file name: ILSVRC2012_img_<split>.tar."""
    return f"{ARCHIVE_STEM}{split}.tar"


def dataset(split: str, resize: int | None = None) -> str:
    """The folder (local or remote) holding one split's MDS dataset: ILSVRC2012_img_<split>[_r<N>] for
    train and val, <split>[_r<N>] for any other split (imagenet-a, ...)."""
    return f"{ARCHIVE_STEM if split in SPLITS else ''}{split}{variant(resize)}"


def split_folder(root: str | None, split: str, resize: int | None = None) -> str | None:
    """`<root>/<dataset(split, resize)>`, for a local folder or a remote URL (None stays None)."""
    return None if root is None else f"{str(root).rstrip('/')}/{dataset(split, resize)}"
