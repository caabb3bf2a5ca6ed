"""scoring: `evaluate` scores a model on val and the test sets researchers report beside it, in one call.

    from how_to_imagenet import evaluate
    table = evaluate(model, local="data/mds", device="cuda")   # every split under data/mds, printed

`model` is any callable from a batch of images (N x 3 x 224 x 224 floats, normalised by the ImageNet mean
and std, on `device`) to N x 1000 logits in torchvision's class order. Each split is read with its val
transform; `y` is the class index among all 1000 in every split. Scores, in percent:

    val                      top-1 and top-5
    val ReaL                 top-1 by Beyer et al.: over the images with at least one ReaL label, the share
                             whose prediction is one of them (the 3,163 images with none count nowhere)
    imagenet-v2-*, -sketch   top-1 and top-5 over all 1000 classes
    imagenet-a, imagenet-r   top-1 and top-5 with the logits restricted to the set's 200 classes (the
                             dataset's classes.json), as Hendrycks et al. score them
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .names import EVAL_SPLITS, split_folder

SPLITS = ("val", *EVAL_SPLITS)  # in the order of the table
RESTRICTED = ("imagenet-a", "imagenet-r")  # scored on their own classes only
REAL = "val-real"  # the table's row of val's ReaL top-1


def present(local: str | Path) -> list[str]:
    """The splits of SPLITS whose dataset is in `local` (DATA/mds)."""
    return [s for s in SPLITS if (Path(split_folder(str(local), s) or "") / "index.json").is_file()]


def evaluate(model: Callable[[Any], Any], local: str | Path | None = None, remote: str | None = None,
             splits: Sequence[str] | None = None, batch_size: int = 256, device: str = "cpu",
             num_workers: int = 0, show: bool = True) -> dict[str, dict[str, float]]:
    """Score `model` on `splits` (default: those of SPLITS in `local`); a row per split (and `val-real`)
    of {"images": n, "top1": percent, "top5": percent} ("val-real" has no top-5), printed as a table
    when `show`. A progress bar per split."""
    import torch
    from tqdm import tqdm

    from .loader import ImageNetMDS
    from .pipeline.shm import release
    from .transforms import normalize

    if splits is None:
        if local is None:
            raise ValueError("evaluate: name the splits when the datasets are remote only")
        splits = present(local)
    if unknown := [s for s in splits if s not in SPLITS]:
        raise ValueError(f"evaluate: {unknown[0]!r} is not one of {', '.join(SPLITS)}")
    table: dict[str, dict[str, float]] = {}
    for split in splits:
        ds = ImageNetMDS(local=None if local is None else str(local), remote=remote, split=split,
                         batch_size=batch_size, real=split == "val")
        try:
            held = torch.tensor(ds.held, device=device) if split in RESTRICTED else None
            counts = torch.zeros(4, dtype=torch.long)  # images, top-1, top-5, then ReaL: images with labels, right
            real = torch.zeros(2, dtype=torch.long)
            loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=num_workers)
            with torch.no_grad(), tqdm(total=len(ds), desc=f"evaluate {split}", unit="img", disable=not show) as bar:
                for batch in loader:
                    images, y = batch[0].to(device), batch[1].to(device)
                    logits = model(normalize(images))
                    if held is not None:  # the best of the set's own classes, as class indices among the 1000
                        top = held[logits[:, held].topk(min(5, len(held)), dim=1).indices]
                    else:
                        top = logits.topk(5, dim=1).indices
                    counts[0] += len(y)
                    counts[1] += int((top[:, 0] == y).sum())
                    counts[2] += int((top == y[:, None]).any(dim=1).sum())
                    if split == "val":
                        labels = batch[2].to(device)
                        labelled = labels.any(dim=1)
                        real[0] += int(labelled.sum())
                        real[1] += int(labels.gather(1, top[:, :1]).squeeze(1)[labelled].sum())
                    bar.update(len(y))
        finally:
            release(ds)
        n = int(counts[0])
        table[split] = {"images": n, "top1": 100 * int(counts[1]) / n, "top5": 100 * int(counts[2]) / n}
        if split == "val":
            table[REAL] = {"images": int(real[0]), "top1": 100 * int(real[1]) / max(int(real[0]), 1)}
    if show:
        print(format_table(table))
    return table


def format_table(table: dict[str, dict[str, float]]) -> str:
    """The scores as a plain-text table, one split a line."""
    width = max(len(name) for name in (*table, "split"))
    lines = [f"{'split':<{width}} {'images':>7} {'top-1':>7} {'top-5':>7}"]
    for name, row in table.items():
        top5 = f"{row['top5']:7.2f}" if "top5" in row else f"{'-':>7}"
        note = " (ReaL labels)" if name == REAL else " (logits restricted to its classes)" if name in RESTRICTED else ""
        lines.append(f"{name:<{width}} {int(row['images']):>7} {row['top1']:7.2f} {top5}{note}")
    return "\n".join(lines)
