"""config: validate a config file and print what Make needs of it, as Make variable assignments.

The Makefile includes this output (regenerated whenever the config changes), so a bad config stops
`make` at once with one clear line, and DATA defaults to the config's data_dir."""

from __future__ import annotations

import argparse

from imagenet.core import UserError, load_config, main


def run() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("config")
    cfg = load_config(p.parse_args().config)
    for path in [cfg.data_dir, cfg.checksums]:
        if any(c.isspace() for c in str(path)):
            raise UserError(f"{cfg.path}: Make cannot handle white space in the path {path}; choose another")
    print(f"CONFIG_DATA := {cfg.data_dir}")
    print(f"CONFIG_SPLITS := {' '.join(cfg.splits)}")
    print(f"CONFIG_CHECKSUMS := {cfg.checksums}")  # the folder; Make looks for the *SUMS files in it each run


if __name__ == "__main__":
    main(run)
