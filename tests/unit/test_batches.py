"""ImageNetLoader: batches decoded in threads hold the fast path's pixels, every sample once, and its errors."""

from __future__ import annotations

import functools
import gc
import random
import threading
from collections import Counter
from pathlib import Path

import pytest
import torch
from streaming import MDSWriter

from how_to_imagenet import ImageNetLoader, ImageNetMDS, normalize
from how_to_imagenet import batches as batches_module
from how_to_imagenet.names import split_folder
from how_to_imagenet.pipeline.stages.check import read_dataset
from how_to_imagenet.testing.fixture import bench_photos
from how_to_imagenet.transforms import FastTrain, FastVal

from .test_transforms import jpeg, junk_before_the_end

SAMPLES = 45  # five batches of 8 and a last one of 5


@functools.cache
def images() -> list[bytes]:
    """Photos, and what the extension hands to Pillow: CMYK, PNG, a JPEG read with a warning; and grey. Made
    once per process, on first use (Pillow's noise is not seeded)."""
    odd = [jpeg(300, 200, "CMYK"), jpeg(300, 200, fmt="PNG"), junk_before_the_end(jpeg(320, 240)),
           jpeg(400, 300, "L")]
    photos = bench_photos(random.Random(7), SAMPLES - len(odd))
    return photos[:10] + odd + photos[10:]


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """A train and a val split of SAMPLES samples each, written by streaming's own MDSWriter."""
    for split in ("train", "val"):
        with MDSWriter(out=split_folder(str(tmp_path), split), columns={"x": "jpeg", "y": "int", "wnid": "str"},
                       size_limit=1 << 20) as out:
            for i, x in enumerate(images()):
                out.write({"x": x, "y": i, "wnid": "n01440764"})
    return tmp_path


def stored(local: Path, split: str) -> list[bytes]:
    return [bytes(x) for x, _ in ImageNetMDS(local=str(local), split=split, transform="bytes", batch_size=1,
                                              shuffle=False)]


def test_val_batches_are_the_fast_paths_pixels_and_every_sample_once(local: Path):
    loader = ImageNetLoader(local=str(local), split="val", batch_size=8, threads=2)
    got = list(loader)
    assert [len(y) for _, y in got] == [8, 8, 8, 8, 8, 5] and len(loader) == 6
    assert torch.equal(torch.cat([y for _, y in got]), torch.arange(SAMPLES))
    x = got[0][0]
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 224, 224) and x.is_contiguous(memory_format=torch.channels_last)
    # A batch stays valid until the next is asked for: read them one at a time.
    data = stored(local, "val")
    for i, (x, _) in enumerate(ImageNetLoader(local=str(local), split="val", batch_size=8, threads=2)):
        for j in range(len(x)):
            assert torch.equal(x[j], FastVal()(data[8 * i + j])), 8 * i + j


def test_train_batches_draw_the_crops_fast_train_draws(local: Path):
    data = stored(local, "train")
    torch.manual_seed(3)
    got = [x.clone() for x, _ in ImageNetLoader(local=str(local), split="train", batch_size=8, shuffle=False)]
    torch.manual_seed(3)
    ref = [FastTrain()(d) for d in data]
    assert all(torch.equal(a, b) for a, b in zip(torch.cat(got), ref, strict=True))


def test_normalized_batches_equal_normalize_of_the_uint8_batches(local: Path):
    uint8 = [x.clone() for x, _ in ImageNetLoader(local=str(local), split="val", batch_size=16)]
    gc.collect()
    floats = [x.clone() for x, _ in ImageNetLoader(local=str(local), split="val", batch_size=16, normalize=True)]
    for a, b in zip(uint8, floats, strict=True):
        assert b.dtype == torch.float32 and b.is_contiguous(memory_format=torch.channels_last)
        assert torch.allclose(normalize(a), b, atol=1e-6)


def test_without_the_extension_pillow_gives_the_same_pixels(local: Path, monkeypatch: pytest.MonkeyPatch):
    with_ext = [x.clone() for x, _ in ImageNetLoader(local=str(local), split="val", batch_size=16)]
    gc.collect()
    monkeypatch.setattr(batches_module, "crops_module", lambda: None)
    without = [x.clone() for x, _ in ImageNetLoader(local=str(local), split="val", batch_size=16)]
    assert all(torch.equal(a, b) for a, b in zip(with_ext, without, strict=True))


def test_reader_processes_give_the_same_batches_as_the_reader_thread(local: Path):
    torch.manual_seed(0)
    data = stored(local, "val")
    got = [(x.clone(), y) for x, y in ImageNetLoader(local=str(local), split="val", batch_size=8, readers=2)]
    assert sorted(torch.cat([y for _, y in got]).tolist()) == list(range(SAMPLES))  # each reader its own part
    for x, y in got:
        for j in range(len(y)):
            assert torch.equal(x[j], FastVal()(data[y[j]])), int(y[j])


def test_drop_last_and_one_thread(local: Path):
    loader = ImageNetLoader(local=str(local), split="val", batch_size=8, threads=1, drop_last=True)
    assert [len(y) for _, y in loader] == [8] * 5 and len(loader) == 5


def test_stopping_mid_epoch_ends_the_threads_and_the_next_epoch_is_whole(local: Path):
    loader = ImageNetLoader(local=str(local), split="train", batch_size=8)
    before = threading.active_count()
    for i, _ in enumerate(loader):
        if i == 1:
            break
    assert not [t for t in threading.enumerate() if t.name.startswith("ImageNetLoader")]
    assert sorted(torch.cat([y for _, y in loader]).tolist()) == list(range(SAMPLES))
    assert threading.active_count() <= before + 4  # streaming's own prepare and ready threads persist


def test_resuming_from_a_state_dict_gives_the_rest_of_the_epoch(local: Path):
    first = ImageNetLoader(local=str(local), split="train", batch_size=8, shuffle=True, shuffle_seed=5)
    seen = []
    for i, (_, y) in enumerate(first):
        seen += y.tolist()
        if i == 1:
            state = first.state_dict()
            break
    del first
    gc.collect()  # its shared memory goes with it: a new dataset may take the same folder
    again = ImageNetLoader(local=str(local), split="train", batch_size=8, shuffle=True, shuffle_seed=5)
    again.load_state_dict(state)
    rest = torch.cat([y for _, y in again]).tolist()
    assert len(seen) == 16 and sorted(seen + rest) == list(range(SAMPLES))


@pytest.mark.parametrize("kwargs,error", [({"batch_size": 0}, "batch_size=0"), ({"threads": 0}, "threads=0"),
                                          ({"batch_size": True}, "batch_size=True"), ({"prefetch": 0}, "prefetch=0"),
                                          ({"transform": 42}, "transform=42"), ({"readers": -1}, "readers=-1")])
def test_bad_arguments_are_refused_before_any_shard_is_opened(tmp_path: Path, kwargs: dict, error: str):
    with pytest.raises((ValueError, TypeError), match=error):
        ImageNetLoader(local=str(tmp_path / "nothing here"), split="val", **kwargs)


def test_image_net_mds_refuses_a_transform_that_is_not_callable_before_streaming(tmp_path: Path):
    with pytest.raises(TypeError, match="transform=42"):
        ImageNetMDS(local=str(tmp_path / "nothing here"), split="val", transform=42)


def test_a_sample_whose_columns_do_not_add_up_is_an_error_in_the_callers_thread(local: Path):
    shard = next(Path(split_folder(str(local), "val")).glob("shard.*.mds"))
    data = bytearray(shard.read_bytes())
    begin = int.from_bytes(data[4:8], "little")  # the first sample: its x size first
    data[begin:begin + 4] = (int.from_bytes(data[begin:begin + 4], "little") + 7).to_bytes(4, "little")
    shard.write_bytes(bytes(data))  # the same size: only reading the sample shows it
    with pytest.raises(ValueError, match="run make check"):
        list(ImageNetLoader(local=str(local), split="val", batch_size=8))


@pytest.mark.parametrize("damage", ["truncated", "longer", "missing"])
def test_local_shards_of_the_wrong_size_are_refused_when_opened(local: Path, damage: str):
    shard = next(Path(split_folder(str(local), "val")).glob("shard.*.mds"))
    if damage == "missing":
        shard.unlink()
    else:
        data = shard.read_bytes()
        shard.write_bytes(data[:-10] if damage == "truncated" else data + b"junk")
    with pytest.raises(ValueError, match=f"{shard.name}.*make check"):
        ImageNetMDS(local=str(local), split="val", batch_size=8)


def test_the_shards_read_in_place_give_the_stored_bytes(local: Path):
    mapped = ImageNetMDS(local=str(local), split="val", transform="bytes", batch_size=1)
    assert mapped.mapped is not None
    for i, data in enumerate(images()):
        x, y = mapped[i]
        assert isinstance(x, memoryview) and bytes(x) == data and y == i


def taken_first(monkeypatch: pytest.MonkeyPatch, tries: int) -> list:
    """Have "another process" create the `_locals` file of the prefix streaming finds free, between its scan
    and its create, on each of the first `tries` set-ups; the shared memory so taken (the caller unlinks it)."""
    from multiprocessing import shared_memory

    from streaming.base.shared import prefix

    real, taken = prefix._check_and_find_retrying, []

    def raced(*args: object, **kwargs: object) -> int:
        found = real(*args, **kwargs)
        if kwargs.get("shm_name") == "locals" and len(taken) < tries:  # one scan per set-up is of `locals`
            taken.append(shared_memory.SharedMemory(f"{found:06}_locals", create=True, size=16))
        return found

    monkeypatch.setattr(prefix, "_check_and_find_retrying", raced)
    return taken


def unlink(taken: list) -> None:
    for shm in taken:
        shm.close()
        shm.unlink()


@pytest.mark.parametrize("reader", ["loader", "check"])
def test_a_prefix_another_process_takes_first_is_skipped_on_the_next_try(local: Path, reader: str,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """Two processes starting at once can both find the same shared-memory prefix free: the one that creates
    its files second sets up again, on the next prefix, instead of failing; ImageNetMDS and check's read-back
    alike."""
    taken = taken_first(monkeypatch, 1)
    try:
        if reader == "loader":
            ds = ImageNetMDS(local=str(local), split="val", transform="bytes", batch_size=8, shuffle=False)
            assert taken and [bytes(x) for x, _ in ds] == images()
        else:
            read = read_dataset(Path(split_folder(str(local), "val")), None, Counter(), decode=False)
            assert taken and read.damage == [] and read.samples == SAMPLES
    finally:
        unlink(taken)


def test_check_says_to_run_again_when_other_readers_took_every_prefix_it_tried(local: Path,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """Not a damaged dataset: one line saying what happened and to run check again."""
    from how_to_imagenet.pipeline.console import UserError
    from how_to_imagenet.pipeline.shm import PREFIX_TRIES

    taken = taken_first(monkeypatch, PREFIX_TRIES + 1)
    try:
        with pytest.raises(UserError, match="run check again"):
            read_dataset(Path(split_folder(str(local), "val")), None, Counter(), decode=False)
        assert len(taken) == PREFIX_TRIES
    finally:
        unlink(taken)
