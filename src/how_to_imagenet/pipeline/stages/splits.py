"""splits: print the config's splits, optionally as Make targets (`--prefix untar-`): what `make all`,
`make folders` (train and val) and `make evals` (`--evals`: the test sets) run over."""

from __future__ import annotations

from ..cli import parser
from ..config import load_config


def run() -> None:
    p = parser(__doc__, split=False)
    p.add_argument("--prefix", default="", help="put this before each split name")
    p.add_argument("--evals", action="store_true",
                   help="the test sets (ImageNetV2, -A, -R, -Sketch), not train and val")
    args = p.parse_args()
    print(" ".join(args.prefix + s.name for s in load_config(args.config).splits.values() if s.is_eval == args.evals))
