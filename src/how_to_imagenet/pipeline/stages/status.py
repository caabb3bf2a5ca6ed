"""status: one line per split and stage (done / stale / damaged / partial / missing, and removed for an
archive deleted after verify) by the same rule the stages use (`stamps.state`), then the next command
to run. A test set (ImageNetV2, -A, -R, -Sketch) has rows once one of its stages has begun; until
then one line says `make evals` makes them. Reads no image and imports neither torch nor streaming."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ...names import SPLITS
from ..cli import setup
from ..console import UserError, human_bytes
from ..context import Context
from ..files import read_json
from ..layout import mds_stage
from ..stage import registry, shown
from ..stage import stage as stage_named
from ..stamps import read_stamp
from .download import removed

TAKES_SPLITS = False  # shows every split of the config (a test set once begun)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per split and stage, for programs")


def run(args: argparse.Namespace) -> None:
    with setup(args, "status", lock=None) as ctx:
        if args.json:
            for r in rows(ctx):
                print(json.dumps(r))
        else:
            show(ctx)


def rows(ctx: Context) -> list[dict[str, Any]]:
    """Every split's stages (and RESIZE variants), in order: split, stage, state (an optional stage
    not made is `optional`), bytes, images and seconds of what it made, and why it is damaged."""
    cfg, paths = ctx.cfg, ctx.paths
    if not cfg.splits:
        raise UserError(f"{cfg.path}: 'splits' names no split; add train and/or val")
    found, mds = [], stage_named("mds")
    for split in (s for s in cfg.splits.values() if shown(ctx, s)):  # a test set once begun
        stages = [(stage, ctx, stage.name) for stage in registry()]
        stages += [(mds, ctx.but(resize=resize), mds_stage(resize)) for resize in paths.resizes(split.name)]
        for stage, variant, name in stages:
            st, stamp = stage.state(variant, split), stage.stamp(variant, split)
            out = (stamp or {}).get("outputs", {}) if st.name in ("done", "stale", "removed") else {}
            state = "optional" if stage.optional and st.name == "missing" else st.name
            found.append({"split": split.name, "stage": name, "state": state,
                          "bytes": out.get("bytes_written", out.get("bytes")), "images": out.get("images"),
                          "seconds": stamp["seconds"] if out and stamp else None, "why": st.why or None,
                          "resize": variant.options.resize})
    return found


def row(r: dict[str, Any], width: int = 6) -> str:
    cells = [r["split"], r["stage"], r["state"], human_bytes(r["bytes"]) if r["bytes"] is not None else "-",
             str(r["images"] if r["images"] is not None else "-"),
             f"{r['seconds']:.1f} s" if r["seconds"] is not None else "-"]
    return f"{cells[0]:<{width}} {cells[1]:<9} {cells[2]:<8} {cells[3]:>10} {cells[4]:>9} {cells[5]:>9}"


def show(ctx: Context) -> None:
    """Print every split's stages, the next command, and what else the stamps and reports say."""
    cfg, paths = ctx.cfg, ctx.paths
    print(f"data: {paths.data}   config: {cfg.path}")
    found = rows(ctx)
    splits = [s for s in cfg.splits.values() if any(r["split"] == s.name for r in found)]
    unasked = [s.name for s in cfg.splits.values() if s not in splits]
    width = max([6, *(len(s.name) for s in splits)])
    print(f"{'split':<{width}} {'stage':<9} {'state':<8} {'size':>10} {'images':>9} {'time':>9}")
    todo, damaged = [], []
    for r in found:
        print(row(r, width))
        if r["state"] not in ("done", "removed", "optional") and r["resize"] is None \
                and not stage_named(r["stage"]).optional:
            todo.append((cfg.splits[r["split"]].bytes, r["split"], r["stage"]))
        if r["why"]:
            again = f"'make {r['stage']}-{r['split']}'" if r["resize"] is None else \
                f"'make mds-{r['split']} RESIZE={r['resize']}'"
            damaged.append(f"damaged: {r['split']} {r['stage']}: {r['why']}; {again} does it again")
    remotes = []
    for split in splits:
        stamps = [read_stamp(paths.stamp(split.name, mds_stage(resize)))
                  for resize in [None, *paths.resizes(split.name)]]
        remotes += [f"{split.name}: {s['outputs']['remote']}" for s in stamps if s and s["outputs"].get("remote")]
    # The smallest split first (val: a good first run), each split's stages in order.
    todo = [f"{stage}-{split}" for _, split, stage in sorted(todo, key=lambda t: t[0])]
    say = ctx.say
    if todo:
        split = todo[0].split("-", 1)[1]
        nothing = all(r["state"] in ("missing", "optional") for r in found if r["split"] == split)
        first = f"make {split} (a {human_bytes(cfg.splits[split].bytes)} download: a good first run)"
        print(say(f"next: {first}" if nothing and split in SPLITS else  # train, val: make val
                  f"next: make {todo[0]}" + (" ..." if len(todo) > 1 else "")))
    else:
        print(f"all done: ImageNetMDS(local='{paths.mds_root}') reads the shards")
    print(say("(untar is optional: it makes ImageFolder trees, which MDS does not need: make folders)"))
    if unasked:
        print(say(f"(the test sets {', '.join(unasked)}: make evals downloads, verifies and writes them)"))
    for line in damaged:
        print(say(line))
    for split in splits:
        if removed(paths, split):
            print(say(f"{split.name}: {paths.tar(split.archive).name} was removed after verify; the shards and make "
                      f"check do not need it (a RESIZE check does; 'make download-{split.name}' fetches it again)"))
    for split in splits:
        aside = paths.aside(paths.tar(split.archive))
        if aside.is_file():
            print(say(f"{split.name}: {aside} ({human_bytes(aside.stat().st_size)}) is a damaged copy verify set "
                      f"aside; 'make clean-{split.name}-tar' removes it (and the archive), or delete it yourself"))
    for line in remotes:
        print(f"remote copy of {line}")
    for split in (s.name for s in splits):
        for path in paths.reports(split):
            r = read_json(path)
            if not path.name.startswith(f"{split}.check") or not isinstance(r, dict):
                continue
            stamp = read_stamp(paths.stamp(split, mds_stage(r.get("resize"))))
            if stamp is None:  # the dataset is gone (cleaned)
                continue
            mistakes = [f"the config: {m}" for m in r.get("config_mistakes") or []]
            failures = r.get("failures") or mistakes or ["(no detail)"]
            verdict = "OK" if r.get("ok") else f"FAILED ({len(failures)}: {failures[0]})"
            stale = stamp["finished"] != r.get("of_shards_finished")
            print(f"make check of {r.get('dataset')}{' at ' + r['remote'] if r.get('remote') else ''}: "
                  f"{r.get('samples')} samples, {verdict}{' (older than the shards: run it again)' if stale else ''}")
