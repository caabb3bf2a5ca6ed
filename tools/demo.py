"""demo: build the ImageNet-shaped fixture, serve it on 127.0.0.1 as the torrents' web seed, run the
whole pipeline (`make all`) through real aria2c, then `make status`, `make check` and a few samples
read back."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from how_to_imagenet.pipeline.console import UserError, log, main
from how_to_imagenet.pipeline.files import remove
from how_to_imagenet.pipeline.layout import DEMO_MARKER
from how_to_imagenet.testing.fixture import build
from how_to_imagenet.testing.webseed import serve

REPOSITORY = Path(__file__).resolve().parents[1]


def make(*args: str) -> None:
    cmd = [os.environ.get("MAKE", "make"), "--no-print-directory", *args]
    log(f"$ {' '.join(cmd)}")
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"demo step failed: {' '.join(cmd)}")


def prepare(folder: Path, repository: Path = REPOSITORY) -> Path:
    """Empty `folder` for the demo and mark it as the demo's: only a folder holding the marker (an
    earlier demo's), an empty one or a new one is used. `/`, $HOME, the repository, the current folder
    and any folder holding one of them are refused, as is any other existing path: nothing the demo
    did not make is deleted."""
    root = folder.resolve()
    given = f"DEMO={folder}"
    kept = {"/": Path("/"), "$HOME": Path.home(), "the repository": repository, "the current folder": Path.cwd()}
    for held, hit in (("is", lambda p: p == root), ("holds", lambda p: p.is_relative_to(root))):
        if what := next((w for w, p in kept.items() if hit(p.resolve())), None):
            raise UserError(f"{given}: {root} {held} {what}; the demo empties its folder: pick a new one, "
                            "e.g. DEMO=demo")
    if root.exists() or root.is_symlink():
        if not root.is_dir() or root.is_symlink():
            raise UserError(f"{given}: {root} exists and is not a folder; pick a new folder, e.g. DEMO=demo")
        if not (root / DEMO_MARKER).is_file() and any(root.iterdir()):
            raise UserError(f"{given}: {root} is not empty and was not made by make demo (no {DEMO_MARKER} in it); "
                            "the demo empties its folder: pick a new one, or empty it yourself")
        remove(root)
    root.mkdir(parents=True)
    (root / DEMO_MARKER).write_text("made by make demo (tools/demo.py): the demo empties this folder on its next run\n")
    return root


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, default=Path("demo"),
                   help="demo folder (emptied first, if an earlier demo made it; any other existing folder is refused)")
    args = p.parse_args()
    t0 = time.time()
    root = prepare(args.dir)
    fixture, data = root / "fixture", root / "data"
    fixture.mkdir(parents=True)
    server = serve(fixture)
    config = build(fixture, f"http://127.0.0.1:{server.server_port}/")
    log(f"fixture in {fixture}, web seed http://127.0.0.1:{server.server_port}/")
    common = [f"CONFIG={config}", f"DATA={data}"]
    make("all", *common)
    make("status", *common)
    make("check", *common)
    make("samples-val", *common)
    server.shutdown()
    print(f"\ndemo finished in {time.time() - t0:.0f} s; try: make status CONFIG={config} DATA={data}",
          file=sys.stderr)


if __name__ == "__main__":
    main(run)
