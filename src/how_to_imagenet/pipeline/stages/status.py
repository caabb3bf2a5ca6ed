"""status: one line per split and stage (done / stale / damaged / partial / missing, and removed for an
archive deleted after verify) by the same rule the stages use (`stamps.state`), then the next command
to run. A test set (ImageNetV2, -A, -R, -Sketch) has rows once one of its stages has begun; until
then one line says `make evals` makes them. Reads no image and imports neither torch nor streaming."""

from __future__ import annotations

from ..cli import parser, setup
from ..console import UserError, human_bytes
from ..context import Context
from ..files import read_json
from ..layout import mds_stage
from ..stage import registry, shown
from ..stage import stage as stage_named
from ..stamps import State, read_stamp
from .download import removed


def row(split: str, stage: str, st: State, stamp: dict | None, width: int = 6) -> str:
    out = (stamp or {}).get("outputs", {}) if st.name in ("done", "stale", "removed") else {}
    size = out.get("bytes_written", out.get("bytes"))
    cells = [split, stage, st.name, human_bytes(size) if size is not None else "-",
             str(out.get("images", "-")), f"{stamp['seconds']:.1f} s" if out and stamp else "-"]
    return f"{cells[0]:<{width}} {cells[1]:<9} {cells[2]:<8} {cells[3]:>10} {cells[4]:>9} {cells[5]:>9}"


def run() -> None:
    args = parser(__doc__, split=False).parse_args()
    with setup(args, "status", lock=None) as ctx:
        show(ctx)


def show(ctx: Context) -> None:
    """Print every split's stages, the next command, and what else the stamps and reports say."""
    cfg, paths = ctx.cfg, ctx.paths
    print(f"data: {paths.data}   config: {cfg.path}")
    if not cfg.splits:
        raise UserError(f"{cfg.path}: 'splits' names no split; add train and/or val")
    todo, remotes, damaged = [], [], []
    splits = [s for s in cfg.splits.values() if shown(ctx, s)]
    unasked = [s.name for s in cfg.splits.values() if s not in splits]
    width = max([6, *(len(s.name) for s in splits)])
    print(f"{'split':<{width}} {'stage':<9} {'state':<8} {'size':>10} {'images':>9} {'time':>9}")
    for split in splits:
        datasets = [None, *paths.resizes(split.name)]  # the full-size dataset, then the RESIZE variants
        stages = registry()
        for stage in stages:
            st = stage.state(ctx, split)
            print(row(split.name, stage.name, st, stage.stamp(ctx, split), width))
            if st.name not in ("done", "removed") and not stage.optional:
                todo.append(f"{stage.name}-{split.name}")
            if st.why:
                damaged.append(f"damaged: {split.name} {stage.name}: {st.why}; 'make {stage.name}-{split.name}' "
                               "does it again")
        mds = stage_named("mds")
        for resize in datasets[1:]:
            variant = ctx.but(resize=resize)
            st = mds.state(variant, split)
            print(row(split.name, mds_stage(resize), st, mds.stamp(variant, split), width))
            if st.why:
                damaged.append(f"damaged: {split.name} {mds_stage(resize)}: {st.why}; "
                               f"'make mds-{split.name} RESIZE={resize}' does it again")
        stamps = [read_stamp(paths.stamp(split.name, mds_stage(resize))) for resize in datasets]
        remotes += [f"{split.name}: {s['outputs']['remote']}" for s in stamps if s and s["outputs"].get("remote")]
    if todo:
        print(f"next: make {todo[0]}" + (" ..." if len(todo) > 1 else ""))
    else:
        print(f"all done: ImageNetMDS(local='{paths.mds_root}') reads the shards")
    print("(untar makes ImageFolder trees, which MDS does not need: make folders)")
    if unasked:
        print(f"(the test sets {', '.join(unasked)}: make evals downloads, verifies and writes them)")
    for line in damaged:
        print(line)
    for split in splits:
        if removed(paths, split):
            print(f"{split.name}: {paths.tar(split.archive).name} was removed after verify; the shards and make check "
                  f"do not need it (a RESIZE check does; 'make download-{split.name}' fetches it again)")
    for split in splits:
        aside = paths.aside(paths.tar(split.archive))
        if aside.is_file():
            print(f"{split.name}: {aside} ({human_bytes(aside.stat().st_size)}) is a damaged copy verify set aside; "
                  f"'make clean-{split.name}-tar' removes it (and the archive), or delete it yourself")
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
