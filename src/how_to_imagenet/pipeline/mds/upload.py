"""UploadingWriter: a ShardWriter that also copies each shard, then index.json, to an object store
(or any remote streaming knows), with streaming's own uploader; imports streaming only when used."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .index import INDEX
from .writer import ShardWriter


class UploadingWriter(ShardWriter):
    def __init__(self, out: str | Path, remote: str, **kwargs: Any) -> None:
        from streaming.base.storage.upload import CloudUploader

        super().__init__(out, **kwargs)
        self.remote = remote
        self.uploader = CloudUploader.get((str(out), remote), exist_ok=True, keep_local=True)
        self.uploads = ThreadPoolExecutor(8, thread_name_prefix="shard-upload")
        self.pending: list[Future] = []

    def shard_written(self, basename: str) -> None:
        for f in self.pending:  # an upload that failed stops the writing at the next shard
            if f.done() and f.exception() is not None:
                raise f.exception()  # type: ignore[misc]
        self.pending.append(self.uploads.submit(self.uploader.upload_file, basename))

    def index_written(self) -> None:
        try:
            for f in self.pending:  # every shard is in the store before the index that names it
                f.result()
            self.uploader.upload_file(INDEX)
        finally:
            self.uploads.shutdown(wait=True, cancel_futures=True)

    def __exit__(self, kind: type | None, *rest: object) -> None:
        try:
            super().__exit__(kind, *rest)
        finally:
            self.uploads.shutdown(wait=True, cancel_futures=True)


def upload_file(local: Path, remote: str, name: str) -> None:
    """Copy `local/name` to `remote/name`."""
    from streaming.base.storage.upload import CloudUploader

    CloudUploader.get((str(local), remote), exist_ok=True, keep_local=True).upload_file(name)
