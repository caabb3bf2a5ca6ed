"""One module per stage or command, run through `python -m how_to_imagenet.pipeline <name>`. The
stages with a stamp (download, verify, untar, mds) each define a `Stage` (pipeline/stage.py) and are
listed in order by `stage.registry()`; the commands (check, samples, status, clean, splits) each
have a small CLI, `run`, and ask the registry about the stages."""
