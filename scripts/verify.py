"""verify: check a downloaded archive's size and every hash listed for it in checksums/
(MD5SUMS, SHA256SUMS, XXH64SUMS) in one read, the hashes computed side by side in threads."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import xxhash
from tqdm import tqdm

from imagenet.core import (
    Config,
    Paths,
    UserError,
    human_bytes,
    log,
    main,
    parser,
    read_checksums,
    run_stage,
    setup,
    upstream,
)

CHUNK = 8 << 20
HASHERS = {"md5": hashlib.md5, "sha256": hashlib.sha256, "xxh64": xxhash.xxh64}


def file_digests(path: Path, algorithms: list[str], desc: str) -> dict[str, str]:
    """Hex digests of `path`: one sequential read; the next chunk is read while the last is hashed."""
    hashers = {alg: HASHERS[alg]() for alg in algorithms}
    size = path.stat().st_size
    with open(path, "rb") as f, ThreadPoolExecutor(len(hashers)) as pool, tqdm(
        total=size, unit="B", unit_scale=True, unit_divisor=1000, desc=desc, mininterval=0.5
    ) as bar:
        pending: list = []
        while chunk := f.read(CHUNK):
            for fut in pending:
                fut.result()
            pending = [pool.submit(h.update, chunk) for h in hashers.values()]
            bar.update(len(chunk))
        for fut in pending:
            fut.result()
    return {alg: h.hexdigest() for alg, h in hashers.items()}


def verify(cfg: Config, paths: Paths, split_name: str, expected: dict[str, str]) -> dict:
    split = cfg.split(split_name)
    tar = paths.tar(split)
    size = tar.stat().st_size
    if size != split.bytes:
        raise UserError(f"{tar}: wrong size: expected {split.bytes} bytes, actual {size}; "
                        f"delete it and run 'make download-{split_name}' again")
    actual = file_digests(tar, sorted(expected), f"verify {split_name}")
    for alg in sorted(expected):
        if actual[alg] != expected[alg]:
            raise UserError(f"{tar}: {alg} mismatch: expected {expected[alg]}, actual {actual[alg]}; "
                            f"the file is kept; delete it and run 'make download-{split_name}' again")
    log(f"[verify {split_name}] {tar.name}: {human_bytes(size)}, {', '.join(sorted(actual))} OK")
    return {"path": str(tar), "bytes": size, "bytes_read": size, **actual}


def run() -> None:
    args = parser(__doc__).parse_args()
    cfg, paths = setup(args)
    split = cfg.split(args.split)
    expected = read_checksums(cfg, split.archive)
    inputs = {"download": upstream(paths, split.name, "download"), "expected": expected}
    run_stage(paths, split.name, "verify", inputs, lambda: verify(cfg, paths, split.name, expected))


if __name__ == "__main__":
    main(run)
