"""make_fixture: write a tiny ImageNet-shaped fixture into a folder: ILSVRC2012_img_train.tar (class
tars), ILSVRC2012_img_val.tar (flat, real val names and labels), a .torrent for each whose only source
is the web seed URL given (serve the folder there), checksums/ and config.yaml."""

from __future__ import annotations

import argparse
from pathlib import Path

from imagenet.core import log, main
from imagenet.fixture import build


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--web-seed", required=True, help="URL serving OUT, e.g. http://127.0.0.1:8000/")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    log(f"fixture config: {build(args.out, args.web_seed, args.seed)}")


if __name__ == "__main__":
    main(run)
