"""splits: print the config's splits, optionally as Make targets (`--prefix untar-`): what `make all`,
`make folders` and `make check` run over."""

from __future__ import annotations

from ..cli import parser
from ..config import load_config


def run() -> None:
    p = parser(__doc__, split=False)
    p.add_argument("--prefix", default="", help="put this before each split name")
    args = p.parse_args()
    print(" ".join(args.prefix + s for s in load_config(args.config).splits))
