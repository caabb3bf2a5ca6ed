"""The one interface every stage with a stamp has, the ordered registry of those stages, and `forget`.

A stage has a name, the stage it needs done before it, and four methods taking the same run context
and split: `inputs` (what it would run on now; a UserError when the stage before is not done),
`present` (what is wrong with the outputs its stamp records, or None), `begun` (what exists once it
has started) and `run` (its work, returning its outputs). `__main__`, `status`, `clean`, `check` and
`forget` go through `registry()`; `state` and `bring_up_to_date` apply the one freshness rule
(`stamps.state`, `stamps.run_stage`) to a stage.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from .config import Split
from .console import UserError
from .context import Context
from .stamps import State, read_stamp, run_stage, state
from .summaries import SUMMARY


class Stage:
    """One stage of the pipeline; a subclass sets `name` and `before` and defines the four methods."""

    name: ClassVar[str]
    before: ClassVar[str | None] = None  # the stage that must be done first (None: the first)
    lock: ClassVar[str] = "exclusive"  # how it holds DATA/.lock (see lock_data)
    optional: ClassVar[bool] = False  # not needed for the shards (status names no next command for it)
    options: ClassVar[tuple[str, ...]] = ()  # the command-line options it takes (fields of Options, cli.add_options)

    @property
    def summary(self) -> str:
        """Its one line, for `how-to-imagenet --help` and `make help` (summaries.SUMMARY)."""
        return SUMMARY[self.name]

    def inputs(self, ctx: Context, split: Split) -> dict[str, Any]:
        raise NotImplementedError

    def present(self, ctx: Context, split: Split, out: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def begun(self, ctx: Context, split: Split) -> list[Path]:
        return []

    def run(self, ctx: Context, split: Split) -> dict[str, Any]:
        raise NotImplementedError

    def needed(self, ctx: Context) -> bool:
        """Whether the shards need this stage on this run (`all` and the split shortcuts run those)."""
        return not self.optional

    def need(self, ctx: Context, split: Split) -> int:
        """About the bytes its run would write to DATA's disk (the command's one check before any work)."""
        return 0

    def stamp_name(self, ctx: Context) -> str:
        """The name its stamp goes by for this run (mds: mds_r<N> for a RESIZE variant)."""
        return self.name

    def stamps(self, ctx: Context, split: Split) -> list[str]:
        """Every stamp name of this stage that `forget` removes."""
        return [self.name]

    def refuse(self, ctx: Context, split: Split) -> None:
        """Raise the one line for a run that must not start, whatever its stamp says (download: the
        config contradicts the archive it finished)."""

    def ready(self, ctx: Context, split: Split) -> None:
        """Raise the one line for what is wrong before any work of the command starts, for a stage not done
        (download: a source the config or the run does not allow); checked before the free space."""

    def force(self, ctx: Context, split: Split) -> bool:
        """Run even if done (download: the user asked to fetch an archive removed after verify)."""
        return False

    def state(self, ctx: Context, split: Split) -> State:
        """Where the stage is for this run, by `stamps.state`."""
        try:
            now = self.inputs(ctx, split)
        except UserError:  # the stage before is not done
            now = None
        return state(ctx.paths, split.name, self.stamp_name(ctx), now,
                     lambda _, out: self.present(ctx, split, out), self.begun(ctx, split))

    def stamp(self, ctx: Context, split: Split) -> dict[str, Any] | None:
        return read_stamp(ctx.paths.stamp(split.name, self.stamp_name(ctx)))

    def bring_up_to_date(self, ctx: Context, split: Split, work: Callable[[], dict[str, Any]] | None = None) -> None:
        """Run the work (`run`, unless `work` is given) unless the stage is done on these inputs; the
        stamp is written last."""
        self.refuse(ctx, split)
        run_stage(ctx.paths, split.name, self.stamp_name(ctx), lambda: self.inputs(ctx, split),
                  work or (lambda: self.run(ctx, split)), lambda _, out: self.present(ctx, split, out),
                  force=self.force(ctx, split))


def registry() -> tuple[Stage, ...]:
    """The stages with a stamp, in pipeline order (imported when asked, so that one stage's command
    imports only what it needs until it asks about the others)."""
    from .stages.download import Download
    from .stages.mds import Mds
    from .stages.untar import Untar
    from .stages.verify import Verify

    return (Download(), Verify(), Untar(), Mds())


def shown(ctx: Context, split: Split) -> bool:
    """Whether status and check take up a split of the config: train and val always, a test set only
    once one of its stages has begun (a user who never asked for the test sets sees none of them)."""
    return not split.is_eval or any(s.state(ctx, split).name != "missing" for s in registry())


def stage(name: str) -> Stage:
    """The registered stage called `name`."""
    return next(s for s in registry() if s.name == name)


def forget(ctx: Context, split: Split, name: str) -> list[Path]:
    """Remove the stamp of stage `name` and those of every stage after it in the registry, in order:
    what they recorded no longer holds, so each is done again when next asked for. The stamps removed."""
    stages = registry()
    first = next(k for k, s in enumerate(stages) if s.name == name)
    removed = []
    for s in stages[first:]:
        for path in (ctx.paths.stamp(split.name, stamp) for stamp in s.stamps(ctx, split)):
            if path.exists() or path.is_symlink():
                path.unlink()
                removed.append(path)
    return removed
