"""The pipeline that makes the MDS shards: one module per job, one module per stage (`stages/`).

Run a stage with `how-to-imagenet <stage> [options] [split ...]` (`python -m how_to_imagenet`; the Makefile does).
Stdlib, PyYAML, tqdm and xxhash only at import: no stage imports streaming or torch unless its work
needs them.
"""
