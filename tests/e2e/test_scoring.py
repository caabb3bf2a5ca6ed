"""Loading and scoring the test sets: ImageNetMDS on each (the val transform, y among the 1000, the
classes it holds), val's ReaL labels as the column `real`, and `evaluate` with a model whose right
answers are known by construction, every figure of its table asserted exactly."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from how_to_imagenet.labels import real, real_labels
from how_to_imagenet.names import EVAL_SPLITS
from how_to_imagenet.pipeline.console import UserError
from how_to_imagenet.pipeline.index import read_index
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.stages.mds import real_column
from how_to_imagenet.testing.runs import checked, copy_data, forked, read_mds, rewrite

WRONG = 758  # a class no fixture split holds: the model's wrong answer


def key(image) -> bytes:  # a tensor
    return hashlib.sha1(image.contiguous().numpy().tobytes()).digest()


def planned(split: str, n: int, y: int, held: list[int]) -> list[float]:
    """The logits the model gives sample n of `split` (true class y): right on every even n; on n % 4 == 1
    WRONG first and y second (in the top 5); on n % 4 == 3 a wrong class first and y last. In A and R the
    n % 4 == 1 wrong class is not one of the set's, so restricted to them the answer is right."""
    logits = [0.0] * 1000
    if n % 2 == 0:
        logits[y] = 10.0
    elif n % 4 == 1:
        logits[WRONG], logits[y] = 10.0, 5.0
    else:
        wrong = held[(held.index(y) + 1) % len(held)] if split in ("imagenet-a", "imagenet-r") else WRONG
        logits[wrong], logits[y] = 10.0, -1.0
    return logits


def score(local: Path) -> tuple[dict, str, dict]:
    """In a child (`forked`): evaluate with the planned model, every split and then A alone; the table,
    what it printed, A's table."""
    import contextlib
    import io

    import torch

    from how_to_imagenet import ImageNetMDS, evaluate, normalize
    from how_to_imagenet.pipeline.shm import release

    answers = {}
    for split in ("val", *EVAL_SPLITS):
        ds = ImageNetMDS(local=str(local), split=split, batch_size=4)
        for n in range(len(ds)):
            x, y = ds[n]
            answers[key(normalize(x[None])[0])] = planned(split, n, y, ds.held)
        release(ds)

    def model(images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([answers[key(image)] for image in images])

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        table = evaluate(model, local=local, batch_size=5)
    return table, printed.getvalue(), evaluate(model, local=local, splits=["imagenet-a"], show=False)


def test_evaluate_scores_every_split_exactly_as_defined(evals_built: dict):
    table, printed, only = forked(lambda: score(Paths(evals_built["data"]).mds_root))
    # 24 val images: 12 right, 6 more in the top 5. ReaL: 22 have labels (2 have none); 11 of those are
    # right: 10 of the 12 answered y (2 whose ReaL labels leave y out), and one WRONG answer in its ReaL list.
    assert table == {
        "val": {"images": 24, "top1": 50.0, "top5": 75.0},
        "val-real": {"images": 22, "top1": 50.0},
        **{v2: {"images": 12, "top1": 50.0, "top5": 75.0} for v2 in EVAL_SPLITS[:3]},
        "imagenet-a": {"images": 8, "top1": 75.0, "top5": 100.0},  # restricted to the set's 4 classes
        "imagenet-r": {"images": 8, "top1": 75.0, "top5": 100.0},
        "imagenet-sketch": {"images": 8, "top1": 50.0, "top5": 75.0},
    }
    assert printed.splitlines()[-9:] == [
        "split                          images   top-1   top-5",
        "val                                24   50.00   75.00",
        "val-real                           22   50.00       - (ReaL labels)",
        "imagenet-v2-matched-frequency      12   50.00   75.00",
        "imagenet-v2-threshold0.7           12   50.00   75.00",
        "imagenet-v2-top-images             12   50.00   75.00",
        "imagenet-a                          8   75.00  100.00 (logits restricted to its classes)",
        "imagenet-r                          8   75.00  100.00 (logits restricted to its classes)",
        "imagenet-sketch                     8   50.00   75.00"]
    assert only == {"imagenet-a": table["imagenet-a"]}


def test_imagenet_mds_reads_each_test_set_with_the_val_transform(evals_built: dict):
    forked(lambda: read_each(str(Paths(evals_built["data"]).mds_root)))


def read_each(local: str) -> None:
    from how_to_imagenet import FastVal, ImageNetMDS
    from how_to_imagenet.pipeline.shm import release

    for split in EVAL_SPLITS:
        ds = ImageNetMDS(local=local, split=split, batch_size=4)
        assert isinstance(ds.transform, FastVal) and len(ds.classes) == 1000 and ds.shuffle is False
        x, y = ds[0]
        assert tuple(x.shape) == (3, 224, 224) and y == 0
        assert ds.held == ([0, 6, 500, 999] if split in ("imagenet-a", "imagenet-r") else
                           [0, 1, 2, 999] if split == "imagenet-sketch" else [0, 1, 2, 10, 100, 999])
        release(ds)


def test_val_samples_carry_their_real_labels_by_file_name(evals_built: dict):
    forked(lambda: read_real(evals_built["data"]))


def read_real(data: Path) -> None:
    from how_to_imagenet import ImageNetMDS
    from how_to_imagenet.pipeline.shm import release

    names = [row.name for row in read_index(Paths(data).index("val"))]
    samples = read_mds(Paths(data).mds("val"))
    assert [s["real"] for s in samples] == [real_labels()[int(n[15:23]) - 1] for n in names]
    assert [s["real"] for s in samples][:4] == [[0], [0, 758], [758, 472], []]  # ILSVRC2012_val_00000236: none
    assert real("ILSVRC2012_val_00000001.JPEG") == [] and real("ILSVRC2012_val_00000002.JPEG") == [970, 795]
    ds = ImageNetMDS(local=str(Paths(data).mds_root), split="val", batch_size=4, real=True)
    _, y, mask = ds[1]
    assert y == 0 and mask.nonzero().flatten().tolist() == [0, 758]
    assert not ds[3][2].any()
    release(ds)


@pytest.mark.parametrize(("content", "message"), [
    ([[1]] * 49999, "49999 entries, not a list of the 50000 val images' label lists"),
    ([[1]] * 49999 + [[1000]], "entry 49999 (ILSVRC2012_val_00050000.JPEG) is [1000], not a list of class indices"),
    ([[-1]] + [[1]] * 49999, "entry 0 (ILSVRC2012_val_00000001.JPEG) is [-1], not a list of class indices 0..999"),
    ({"1": [1]}, "a JSON dict, not a list of the 50000"),
])
def test_a_bad_real_label_file_is_one_line_naming_it(tmp_path: Path, content: object, message: str,
                                                      evals_built: dict):
    path = tmp_path / "real.json"
    path.write_text(json.dumps(content))
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(
            ")", r"\)")) as e:
        real_column(read_index(Paths(evals_built["data"]).index("val")), path)
    assert str(e.value).startswith(f"{path}: ") and "\n" not in str(e.value)



def test_make_check_proves_each_val_samples_real_labels(evals_built: dict, tmp_path: Path):
    data = copy_data(evals_built["data"], tmp_path / "data")

    def mislabel(samples: list[dict]) -> list[dict]:
        samples[1]["real"] = [5]
        return samples

    rewrite(Paths(data).mds("val"), mislabel)
    with pytest.raises(UserError, match=re.escape(
            "1 samples carry other ReaL labels than their image's: sample 1 (ILSVRC2012_val_00002138.JPEG) has [5], "
            "its labels are [0, 758]")):
        forked(lambda: checked(evals_built["config"], data, "val"))
