"""The test sets end to end, through make with real aria2c over loopback HTTP: `make evals` writes the
six datasets, every sample's `y` and bytes as the archive's folder says, in the order of y then name,
byte-identical when written again; status shows a test set only once begun."""

from __future__ import annotations

import json
from pathlib import Path

from how_to_imagenet.labels import wnids
from how_to_imagenet.names import EVAL_SPLITS
from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.evals import ARCHIVES
from how_to_imagenet.testing.runs import Fixture, checked, make, mds_files, read_mds


def test_make_evals_writes_every_test_set_with_y_the_index_among_the_1000(evals: tuple[Fixture, dict],
                                                                          evals_built: dict):
    _, truth = evals
    data, config, before = evals_built["data"], evals_built["config"], evals_built["before"]
    assert not [line for line in before.splitlines() if line.startswith("imagenet-")]
    assert [line for line in before.splitlines() if "make evals" in line] == [
        f"(the test sets {', '.join(EVAL_SPLITS)}: make evals downloads, verifies and writes them)"]
    said = [line for line in evals_built["stdout"].splitlines() if line.startswith(("download ", "verify ", "mds "))]
    assert said == [f"{stage} {split}" for split in ("val", *EVAL_SPLITS) for stage in ("download", "verify", "mds")]
    # Sketch's source is not there: its mirror, tried next, is.
    assert (data / "tar" / ARCHIVES["imagenet-sketch"]).is_file()
    for split in EVAL_SPLITS:
        samples = read_mds(Paths(data).mds(split))
        assert [(s["y"], s["wnid"], s["raw"]) for s in samples] == [(y, wnids()[y], x) for y, _, x in truth[split]]
        held = json.loads((Paths(data).mds(split) / "classes.json").read_text())
        assert [(c["y"], c["wnid"], c["images"]) for c in held] == sorted(
            {(y, wnids()[y], sum(1 for t in truth[split] if t[0] == y)) for y, _, _ in truth[split]})
    a = json.loads((Paths(data).mds("imagenet-a") / "classes.json").read_text())
    assert [c["y"] for c in a] == [0, 6, 500, 999]  # 4 of the 1000 classes: the mask a scorer applies
    assert checked(config, data, "val", *EVAL_SPLITS).count(": OK (") == 7  # val with its column real
    after = make("status", f"CONFIG={config}", f"DATA={data}").stdout
    rows = [line.split() for line in after.splitlines() if line.startswith("imagenet-")]
    stages = ("download", "verify", "untar", "mds")
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (s, st, "done" if st != "untar" else "missing") for s in EVAL_SPLITS for st in stages}
    assert "make evals" not in after


def test_a_test_set_written_again_is_byte_identical_and_untar_gives_wnid_folders(evals: tuple[Fixture, dict],
                                                                                  tmp_path: Path):
    fixture, truth = evals
    data = tmp_path / "data"
    where = (f"CONFIG={fixture.config}", f"DATA={data}")
    split = "imagenet-v2-matched-frequency"
    make(f"mds-{split}", *where)
    first = mds_files(Paths(data).mds(split))
    make(f"clean-{split}", *where)
    assert not Paths(data).mds(split).exists()
    make(f"mds-{split}", *where)
    assert mds_files(Paths(data).mds(split)) == first
    make(f"untar-{split}", *where)
    tree = Paths(data).untar(split)
    assert sorted(p.name for p in tree.iterdir()) == sorted({wnids()[y] for y, _, _ in truth[split]})
    assert sorted((wnids()[y], name, x) for y, name, x in truth[split]) == sorted(
        (f.parent.name, f.name, f.read_bytes()) for f in tree.glob("*/*"))
