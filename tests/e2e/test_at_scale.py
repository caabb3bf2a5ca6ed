"""What training at scale relies on, through streaming's own machinery (issue 20): 2 nodes x 2 ranks
x 2 DataLoader workers read disjoint samples that together are the whole epoch (local shards and the
S3 copy); a StreamingDataLoader state dict taken mid-epoch resumes with exactly the rest; two jobs on
one machine reading the same shards keep their own shared memory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest
import xxhash

from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.runs import ENV, PROJECT, free_port, read_mds

ROOT = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                          reason="each simulated node gets a /dev/shm of its own (unshare, mount): needs root")

# 2 nodes x 2 ranks, forked from one process that imported torch and streaming once: each node gets a
# mount namespace with a /dev/shm and a temp folder of its own (as two machines would have), then forks
# its two ranks; each rank writes every sample it read, as [y, xxh64 of the JPEG bytes], in order.
NODES = """
import json, os, sys
import torch  # noqa: F401 (imported once, before the forks)
from streaming import StreamingDataLoader, StreamingDataset
import xxhash
from how_to_imagenet.testing.runs import own_shm

class Identities(StreamingDataset):
    def __getitem__(self, idx):
        s = super().__getitem__(idx)
        return [int(s["y"]), xxhash.xxh64(s["x"].fp.getvalue()).intdigest()]

def rank(r, local, remote, out):
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r % 2))
    ds = Identities(local=local, remote=remote, shuffle=True, shuffle_seed=7, batch_size=2)
    seen = [s for b in StreamingDataLoader(ds, batch_size=2, num_workers=2, collate_fn=list) for s in b]
    with open(out, "w") as f:
        json.dump(seen, f)

def wait_all(pids):
    return max(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) != 0 for p in pids)

locals_, remote, outs, tmps = json.loads(sys.argv[1])
nodes = []
for node in (0, 1):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            own_shm(tmps[node])
            kids = []
            for r in (2 * node, 2 * node + 1):
                kid = os.fork()
                if kid == 0:
                    try:
                        rank(r, locals_[node], remote, outs[r])
                        os._exit(0)
                    except BaseException:
                        import traceback; traceback.print_exc()
                        os._exit(1)
                kids.append(kid)
            code = wait_all(kids)
        finally:
            os._exit(code)
    nodes.append(pid)
sys.exit(wait_all(nodes))
"""


def identities(local: Path) -> Counter:
    return Counter((s["y"], xxhash.xxh64(s["raw"]).intdigest()) for s in read_mds(local))


def run_nodes(tmp_path: Path, local_of, remote: str, env: dict[str, str]) -> list[list[list[int]]]:
    """2 nodes of 2 ranks each (WORLD_SIZE 4, LOCAL_WORLD_SIZE 2, see NODES); what each rank read."""
    tmps = [tmp_path / f"node{node}-tmp" for node in (0, 1)]
    for t in tmps:
        t.mkdir()
    outs = [str(tmp_path / f"rank{r}.json") for r in range(4)]
    args = json.dumps([[str(local_of(n)) for n in (0, 1)], remote or None, outs, [str(t) for t in tmps]])
    done = subprocess.run([sys.executable, "-c", NODES, args], capture_output=True, text=True, timeout=300,
                          env={**ENV, **env, "PYTHONPATH": str(PROJECT / "src"), "WORLD_SIZE": "4",
                               "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())})
    assert done.returncode == 0, done.stderr
    return [json.loads(Path(out).read_text()) for out in outs]


@ROOT
def test_two_nodes_of_two_ranks_with_two_workers_read_disjoint_parts_of_the_whole_epoch(built: Path,
                                                                                          tmp_path: Path):
    for node in (0, 1):  # each node has the shards on its own disk
        shutil.copytree(Paths(built).mds("train"), tmp_path / f"node{node}" / "train")
    parts = run_nodes(tmp_path, lambda node: tmp_path / f"node{node}" / "train", "", {})
    assert [len(p) for p in parts] == [12, 12, 12, 12]
    assert Counter(tuple(s) for p in parts for s in p) == identities(Paths(built).mds("train"))


@ROOT
def test_two_nodes_read_the_s3_copy_into_their_own_caches_disjointly_and_wholly(built: Path, tmp_path: Path,
                                                                               s3: dict[str, str]):
    import boto3

    client = boto3.client("s3", endpoint_url=s3["S3_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    local, prefix = Paths(built).mds("train"), f"scale-{uuid.uuid4().hex[:8]}/ILSVRC2012_img_train"
    for f in local.rglob("*"):
        if f.is_file():
            client.upload_file(str(f), "imagenet", f"{prefix}/{f.relative_to(local)}")
    parts = run_nodes(tmp_path, lambda node: tmp_path / f"node{node}" / "cache", f"s3://imagenet/{prefix}", s3)
    assert [len(p) for p in parts] == [12, 12, 12, 12]
    assert Counter(tuple(s) for p in parts for s in p) == identities(local)


def test_a_state_dict_taken_mid_epoch_resumes_with_exactly_the_rest(built: Path):
    from streaming import StreamingDataLoader, StreamingDataset

    from how_to_imagenet.pipeline.shm import release

    def loader() -> tuple[StreamingDataset, StreamingDataLoader]:
        ds = StreamingDataset(local=str(Paths(built).mds("train")), shuffle=True, shuffle_seed=3, batch_size=4)
        # A dict of columns: StreamingDataLoader counts a batch's samples by its first column.
        return ds, StreamingDataLoader(ds, batch_size=4, num_workers=2, collate_fn=lambda b: {
            "id": [xxhash.xxh64(s["x"].fp.getvalue()).intdigest() for s in b]})

    ds, whole = loader()
    epoch = [s for batch in whole for s in batch["id"]]
    release(ds)
    ds, first = loader()
    seen = []
    for batch in first:
        seen += batch["id"]
        if len(seen) == 20:  # five batches in
            state = first.state_dict()
            break
    del first  # its workers stop
    release(ds)
    ds, resumed = loader()
    resumed.load_state_dict(state)
    rest = [s for batch in resumed for s in batch["id"]]
    release(ds)
    assert len(epoch) == 48 and seen == epoch[:20] and rest == epoch[20:]


KEEP_READING = """
import json, sys
from streaming import StreamingDataset
ds = StreamingDataset(local=sys.argv[1], shuffle=True, shuffle_seed=1, batch_size=1)
seen = [ds[i]["wnid"] for i in range(len(ds) // 2)]
print("half", flush=True)
sys.stdin.readline()
seen += [ds[i]["wnid"] for i in range(len(ds) // 2, len(ds))]
print(json.dumps(seen), flush=True)
"""


# The two jobs get a machine of their own, as the nodes above do: a mount namespace with a /dev/shm and a temp
# folder of its own, which the second job enters too. Other tests' processes come and go in the machine's
# /dev/shm, and one that exits can unlink names it once made there (its resource tracker), whoever holds
# them now: that is not what this test is about.
MACHINE = 'mount --make-rprivate / && mount -t tmpfs tmpfs /dev/shm && exec "$0" "$@"'


@ROOT
def test_two_jobs_reading_the_same_shards_keep_their_own_shared_memory(built: Path, tmp_path: Path):
    local = str(Paths(built).mds("train"))
    (tmp_path / "tmp").mkdir()
    env = {**ENV, "PYTHONPATH": str(PROJECT / "src"), "TMPDIR": str(tmp_path / "tmp")}
    first = subprocess.Popen(["unshare", "--mount", "sh", "-c", MACHINE, sys.executable, "-c", KEEP_READING, local],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert first.stdout.readline() == "half\n"
        shm = Path(f"/proc/{first.pid}/root/dev/shm")  # the jobs' /dev/shm, seen from here
        held = {m.split("/dev/shm/")[1] for m in Path(f"/proc/{first.pid}/maps").read_text().split()
                if m.startswith("/dev/shm/")}
        second = subprocess.run(["nsenter", f"--target={first.pid}", "--mount", sys.executable, "-c", KEEP_READING,
                                 local], input="\n", capture_output=True, text=True, env=env,
                                timeout=120)  # the second job reads a whole epoch, and exits
        assert second.returncode == 0, second.stderr
        assert held and all((shm / n).exists() for n in held)  # the first job's, left alone
        out, _ = first.communicate("\n", timeout=120)
        assert first.returncode == 0
        want = sorted(s["wnid"] for s in read_mds(Paths(built).mds("train")))
        assert sorted(json.loads(out.splitlines()[-1])) == sorted(json.loads(second.stdout.splitlines()[-1])) == want
    finally:
        first.kill()
