"""status: one line per split and stage (done / partial / missing) from the stamps and the disk,
then the next command to run. Reads no image and imports neither torch nor streaming."""

from __future__ import annotations

import json
from pathlib import Path

from imagenet.core import STAGES, Config, Paths, human_bytes, main, parser, partial, read_stamp, setup, variant

OPTIONAL = ("untar",)  # mds reads the verified archive itself


def output_of(paths: Paths, cfg: Config, split: str, stage: str) -> Path:
    if stage in ("download", "verify"):
        return paths.tar(cfg.split(split))
    return paths.untar(split) if stage == "untar" else paths.mds(split)


def state(paths: Paths, cfg: Config, split: str, stage: str) -> tuple[str, dict | None]:
    """done: stamp written and output present; partial: work begun but no stamp; else missing."""
    stamp = read_stamp(paths.stamp(split, stage))
    out = output_of(paths, cfg, split, stage)
    if stamp is not None and out.exists():
        return "done", stamp
    begun = {
        "download": [out, out.with_name(out.name + ".aria2")],
        "verify": [],
        "untar": [out, partial(out)],
        "mds": [out, partial(out)],
    }[stage]
    return ("partial" if any(p.exists() for p in begun) else "missing"), None


def variants(paths: Paths, split: str) -> list[tuple[str, str, dict | None]]:
    """The low-resolution datasets (mds --resize N, stage mds_rN): done, or partial if begun."""
    rows = []
    for resize in paths.resizes(split):
        stage = "mds" + variant(resize)
        stamp = read_stamp(paths.stamp(split, stage))
        done = stamp is not None and paths.mds(split, resize).exists()
        rows.append((stage, "done" if done else "partial", stamp if done else None))
    return rows


def row(split: str, stage: str, st: str, stamp: dict | None) -> str:
    out = (stamp or {}).get("outputs", {})
    size = out.get("bytes_written", out.get("bytes"))
    cells = [split, stage, st, human_bytes(size) if size is not None else "-",
             str(out.get("images", "-")), f"{stamp['seconds']:.1f} s" if stamp else "-"]
    return f"{cells[0]:<6} {cells[1]:<9} {cells[2]:<8} {cells[3]:>10} {cells[4]:>9} {cells[5]:>9}"


def run() -> None:
    args = parser(__doc__, split=False).parse_args()
    cfg, paths = setup(args, lock=False)
    print(f"data: {paths.data}   config: {cfg.path}")
    print(f"{'split':<6} {'stage':<9} {'state':<8} {'size':>10} {'images':>9} {'time':>9}")
    todo, remotes = [], []
    for split in cfg.splits:
        for stage in STAGES:
            st, stamp = state(paths, cfg, split, stage)
            print(row(split, stage, st, stamp))
            if st != "done" and stage not in OPTIONAL:
                todo.append(f"{stage}-{split}")
        low_res = variants(paths, split)
        for stage, st, stamp in low_res:
            print(row(split, stage, st, stamp))
        stages = ["mds", *(stage for stage, _, _ in low_res)]
        remotes += [f"{split}: {stamp['outputs']['remote']}" for stage in stages
                    if (stamp := read_stamp(paths.stamp(split, stage))) and stamp["outputs"].get("remote")]
    if todo:
        print(f"next: make {todo[0]}" + (" ..." if len(todo) > 1 else ""))
    else:
        print(f"all done: StreamingDataset(local='{paths.mds('<split>')}') reads the shards")
    print("(untar makes ImageFolder trees, which MDS does not need: make folders)")
    for line in remotes:
        print(f"remote copy of {line}")
    for report in sorted(paths.data.glob("reports/*.check*.json")):
        r = json.loads(report.read_text())
        verdict = "OK" if r["ok"] else f"FAILED ({len(r['failures'])}: {r['failures'][0]})"
        stamp = read_stamp(paths.stamp(r["split"], "mds" + r["dataset"].removeprefix(f"ILSVRC2012_img_{r['split']}")))
        if stamp is None:  # the dataset is gone (cleaned)
            continue
        stale = stamp["finished"] != r.get("of_shards_finished")
        print(f"make check of {r['dataset']}{' at ' + r['remote'] if r.get('remote') else ''}: {r['samples']} "
              f"samples, {verdict}{' (older than the shards: run it again)' if stale else ''}")


if __name__ == "__main__":
    main(run)
