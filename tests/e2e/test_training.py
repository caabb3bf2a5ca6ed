"""Ready for training: the importable loader, object-store output and input, low-resolution variants."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import xxhash

from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.pipeline.shm import clean_orphaned_shm
from how_to_imagenet.testing.runs import (
    ENV,
    PROJECT,
    Fixture,
    checked,
    copy_data,
    free_port,
    make,
    read_mds,
    use_installed,
)


def identities(local: Path) -> Counter:
    """(y, hash of the pixels) of every sample: what each sample is, whatever the order."""
    return Counter((s["y"], xxhash.xxh64(s["x"].convert("RGB").tobytes()).intdigest()) for s in read_mds(local))


def test_imagenet_mds_in_a_dataloader_with_two_workers_gives_every_sample_once(built: Path):
    import torch
    from torch.utils.data import DataLoader

    from how_to_imagenet import STD, ImageNetMDS, normalize

    clean_orphaned_shm()
    train = ImageNetMDS(local=str(built / "mds"), split="train", batch_size=4)
    image, y = train[0]  # the fast path: uint8, normalised later on the device
    assert isinstance(image, torch.Tensor) and image.shape == (3, 224, 224) and image.dtype == torch.uint8
    assert 0 <= y < 1000
    clean_orphaned_shm()
    reference, y_ref = ImageNetMDS(local=str(built / "mds"), split="train", transform="pil", batch_size=4)[0]
    assert reference.dtype == torch.float32 and reference.shape == (3, 224, 224) and y_ref == y
    clean_orphaned_shm()
    standard, _ = ImageNetMDS(local=str(built / "mds"), split="train", transform="standard", batch_size=4)[0]
    assert standard.dtype == torch.float32  # the old default's name still gives what it gave
    with pytest.raises(ValueError, match="use one of 'fast', 'pil', 'gpu'"):
        ImageNetMDS(local=str(built / "mds"), split="train", transform="nearest", batch_size=4)
    with pytest.raises(ValueError, match="use one of 'fast', 'pil', 'gpu'"):  # before streaming looks at `local`
        ImageNetMDS(local=str(built / "no-such-folder"), split="train", transform="nearest", batch_size=4)
    assert train.classes[517] == "construction crane" and train.wnids[0] == "n01440764"
    clean_orphaned_shm()
    raw = ImageNetMDS(local=str(built / "mds"), split="train", transform=None, batch_size=4, shuffle=True)
    seen = Counter()
    for batch in DataLoader(raw, batch_size=4, num_workers=2, collate_fn=list):
        for image, y in batch:
            assert image.mode == "RGB"
            seen[(y, xxhash.xxh64(image.tobytes()).intdigest())] += 1
    assert seen == identities(Paths(built).mds("train"))  # every sample exactly once
    clean_orphaned_shm()
    val = ImageNetMDS(local=str(built / "mds"), split="val", batch_size=8)
    images, ys = next(iter(DataLoader(val, batch_size=8, num_workers=2)))
    assert images.shape == (8, 3, 224, 224) and ys.tolist() == [0, 0, 0, 1, 1, 1, 59, 59]  # val in order
    clean_orphaned_shm()
    ref = ImageNetMDS(local=str(built / "mds"), split="val", transform="pil", batch_size=8)
    expected, _ = next(iter(DataLoader(ref, batch_size=8, num_workers=2)))
    assert (normalize(images) - expected).abs().mean() < 2 / 255 / min(STD)  # the same pixels, within 2 levels


def test_the_gpu_path_through_a_dataloader_on_the_cpu(built: Path):
    """transform="gpu" with its collate and decoder: what a GPU run does, on the CPU."""
    import torch
    from torch.utils.data import DataLoader

    from how_to_imagenet import ImageNetMDS, gpu

    clean_orphaned_shm()
    train = ImageNetMDS(local=str(built / "mds"), split="train", transform="gpu", batch_size=8)
    loader = DataLoader(train, batch_size=8, num_workers=2, collate_fn=gpu.collate)
    ys = []
    for x, y in gpu.decoded(loader, device="cpu"):
        assert x.shape == (len(y), 3, 224, 224) and x.dtype == torch.float32 and x.abs().max() < 3
        ys += y.tolist()
    assert sorted(ys) == sorted(s["y"] for s in read_mds(Paths(built).mds("train")))


# Both ranks forked from one process that imported torch and streaming once (as test_at_scale's nodes), as root
# with a /dev/shm of their own; each writes every sample it read, as [y, xxh64 of the decoded pixels], in order.
RANKS = """
import json, os, sys
from torch.utils.data import DataLoader
import xxhash
from how_to_imagenet import ImageNetMDS
from how_to_imagenet.testing.runs import own_shm

def rank(r, local, out):
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r))
    ds = ImageNetMDS(local=local, split="train", transform=None, batch_size=4, shuffle=True, shuffle_seed=7)
    seen = [[y, xxhash.xxh64(img.tobytes()).intdigest()] for b in DataLoader(ds, batch_size=4, num_workers=2,
            collate_fn=list) for img, y in b]
    with open(out, "w") as f:
        json.dump(seen, f)

local, tmp, outs = sys.argv[1], sys.argv[2], sys.argv[3:]
if os.geteuid() == 0:  # the ranks' shared memory their own, as on a machine of their own (own_shm)
    own_shm(tmp)
kids = []
for r, out in enumerate(outs):
    pid = os.fork()
    if pid == 0:
        try:
            rank(r, local, out)
            os._exit(0)
        except BaseException:
            import traceback; traceback.print_exc()
            os._exit(1)
    kids.append(pid)
sys.exit(max(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) != 0 for p in kids))
"""


def test_two_ranks_each_read_their_own_part_and_together_every_sample_once(built: Path, tmp_path: Path):
    # streaming starts torch.distributed (gloo) for the ranks' rendezvous: on loopback.
    env = {**ENV, "PYTHONPATH": str(PROJECT / "src"), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    outs = [tmp_path / f"rank{r}.json" for r in (0, 1)]
    (tmp_path / "tmp").mkdir()
    done = subprocess.run([sys.executable, "-c", RANKS, str(built / "mds"), str(tmp_path / "tmp"), *map(str, outs)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    parts = [json.loads(out.read_text()) for out in outs]
    assert len(parts[0]) == len(parts[1]) == 24
    assert Counter(tuple(s) for part in parts for s in part) == identities(Paths(built).mds("train"))


def test_the_seed_projects_loading_example_works_unchanged_and_gives_three_channels(built: Path):
    """The seed (josejg/how-to-imagenet) README's usage: StreamingDataset(local=...) with no other
    argument, and a subclass applying ToTensor to sample['x'] without converting it to RGB."""
    from streaming import StreamingDataset
    from torchvision import transforms

    class SeedImageNetMDS(StreamingDataset):
        def __init__(self, local=None, remote=None, transform=None):
            super().__init__(local=local, remote=remote)
            self.transform = transform or transforms.ToTensor()

        def __getitem__(self, idx):
            sample = super().__getitem__(idx)
            return self.transform(sample["x"]), sample["y"]

    for split in ("train", "val"):
        clean_orphaned_shm()
        plain = StreamingDataset(local=str(Paths(built).mds(split)))
        assert 0 <= plain[0]["y"] < 1000 and plain[0]["wnid"].startswith("n")
        clean_orphaned_shm()
        ds = SeedImageNetMDS(local=str(Paths(built).mds(split)))
        items = [ds[i] for i in range(len(ds))]
        assert all(x.shape[0] == 3 for x, _ in items)  # the CMYK and grayscale quirks too
        assert [y for _, y in items] == [s["y"] for s in read_mds(Paths(built).mds(split))]


def test_a_low_resolution_variant_keeps_labels_and_order(fixture: Fixture, built: Path, tmp_path: Path):
    data = copy_data(built, tmp_path / "data")
    make("mds-train", "RESIZE=64", "QUALITY=85", "WORKERS=2", f"CONFIG={fixture.config}", f"DATA={data}")
    said = checked(fixture.config, data, "train", resize=64)  # derives each image again at QUALITY=85
    assert "[check train] 48 samples" in said and ": OK" in said
    small = read_mds(Paths(data).mds("train", 64))
    full = read_mds(Paths(built).mds("train"))
    assert [(s["y"], s["wnid"]) for s in small] == [(s["y"], s["wnid"]) for s in full]
    for s, f in zip(small, full, strict=True):
        assert s["x"].format == "JPEG" and s["x"].mode == "RGB" and min(s["x"].size) <= 64
        if min(f["x"].size) > 64:  # resized: the shorter side becomes 64, the aspect ratio kept
            assert min(s["x"].size) == 64
            assert abs(s["x"].size[0] / s["x"].size[1] - f["x"].size[0] / f["x"].size[1]) < 0.05
        else:
            assert s["raw"] == f["raw"]
    assert any(min(f["x"].size) > 64 for f in full) and any(min(f["x"].size) <= 64 for f in full)
    stamp = json.loads((Paths(data).stamp("train", "mds_r64")).read_text())
    assert stamp["inputs"]["mds"]["resize"] == 64 and stamp["inputs"]["mds"]["quality"] == 85
    status = make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    assert any(line.split()[:3] == ["train", "mds_r64", "done"] for line in status.splitlines())
    assert (Paths(data).mds("train") / "index.json").exists()  # the full-size one stays
    make("clean-train", f"CONFIG={fixture.config}", f"DATA={data}")
    assert not (Paths(data).mds("train", 64)).exists()
    assert not (Paths(data).stamp("train", "mds_r64")).exists()


# ---------------------------------------------------------------- object store


def test_mds_uploads_to_s3_and_check_and_the_loader_read_it_back(fixture: Fixture, built: Path, tmp_path: Path,
                                                                 s3: dict[str, str], installed: Path,
                                                                 monkeypatch: pytest.MonkeyPatch):
    import boto3

    data = copy_data(built, tmp_path / "data")
    remote = "s3://imagenet/run1/mds"
    client = boto3.client("s3", endpoint_url=s3["S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    # What an earlier upload with WORKERS=3 left: parts 00001 and 00002. The merged index must not take them in.
    part = (Paths(built).mds("val") / "00000" / "index.json").read_bytes()
    for k in (1, 2):
        client.put_object(Bucket="imagenet", Key=f"run1/mds/ILSVRC2012_img_val/0000{k}/index.json", Body=part)
    make("mds-val", "WORKERS=1", f"REMOTE={remote}", f"CONFIG={fixture.config}", f"DATA={data}", env=s3)
    index = json.loads((Paths(data).mds("val") / "index.json").read_text())
    assert {sh["raw_data"]["basename"].split("/")[0] for sh in index["shards"]} == {"00000"}
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="imagenet", Prefix="run1/")["Contents"]}
    prefix = "run1/mds/ILSVRC2012_img_val/"
    assert {prefix + "index.json", prefix + "classes.json", prefix + "00000/shard.00000.mds"} <= keys
    status = make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    assert f"remote copy of val: {remote}/ILSVRC2012_img_val" in status
    for name, value in s3.items():
        monkeypatch.setenv(name, value)
    said = checked(fixture.config, data, "val", remote=remote)  # `make check-val REMOTE=...`, in this process
    assert "[check val] 24 samples" in said and ": OK" in said
    # ImageNetMDS, installed from the wheel, reads it back, with no classes.json in its cache.
    ys = [s["y"] for s in read_mds(Paths(built).mds("val"))]
    assert use_installed(installed, tmp_path / "cache", remote, s3) == f"construction crane {ys}\n"


def test_an_upload_failure_is_one_clear_line_and_leaves_no_stamp(fixture: Fixture, built: Path, tmp_path: Path,
                                                                 s3: dict[str, str]):
    data = copy_data(built, tmp_path / "data")
    (Paths(data).stamp("val", "mds")).unlink()
    done = make("mds-val", "REMOTE=s3://no-such-bucket/mds", f"CONFIG={fixture.config}", f"DATA={data}",
                check=False, env=s3)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "uploading val to s3://no-such-bucket/mds/ILSVRC2012_img_val failed" in errors[0]
    assert not (Paths(data).stamp("val", "mds")).exists()
