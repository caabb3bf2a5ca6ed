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
from how_to_imagenet.testing.fixture import build
from how_to_imagenet.testing.webseed import serve


def make(*args: str) -> None:
    cmd = [os.environ.get("MAKE", "make"), "--no-print-directory", *args]
    log(f"$ {' '.join(cmd)}")
    if subprocess.run(cmd).returncode != 0:
        raise UserError(f"demo step failed: {' '.join(cmd)}")


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dir", type=Path, default=Path("demo"), help="demo folder (emptied first)")
    args = p.parse_args()
    t0 = time.time()
    root = args.dir.resolve()
    remove(root)
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
