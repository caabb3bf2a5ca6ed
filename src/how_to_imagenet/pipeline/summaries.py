"""The one line each command of how-to-imagenet says of itself, in `how-to-imagenet --help` and, for the
Make targets that run it, in `make help`. It imports nothing: `make help` (the default goal) reads it
with the system's python3 (`python3 -I -S summaries.py` prints NAME|SUMMARY lines), before any venv.
The stages' order is the registry's (`stage.registry`)."""

SUMMARY = {
    # The stages (Stage.summary).
    "download": "fetch the archive into DATA/tar/ with aria2c (.torrent, magnet, URL; resumable), or link a local "
                "file",
    "verify": "check the archive's size and hashes, and index its images, in one read",
    "untar": "unpack into an ImageFolder tree of wnid folders, DATA/untar/ILSVRC2012_img_SPLIT/ (a test set: "
             "DATA/untar/SPLIT/; optional: mds does not need it)",
    "mds": "write MDS shards to DATA/mds/ILSVRC2012_img_SPLIT/ (a test set: DATA/mds/SPLIT/; train shuffled with "
           "mds.shuffle_seed, val in ImageFolder order)",
    # The other commands (command.COMMANDS).
    "check": "read SPLIT back with StreamingDataset: hashes, counts, labels, order, bytes",
    "samples": "print a few samples read back with StreamingDataset",
    "status": "every split and stage (done/stale/damaged/partial/missing/removed) and the next command",
    "clean": "remove SPLIT's unpacked folder, MDS shards and their stamps (keeps the downloaded tar)",
    # The shortcuts (command.SHORTCUTS): every stage the shards need.
    "all": "train and val (those in the config): download, verify, MDS shards",
    "train": "train only: download, verify, MDS shards",
    "val": "val only: download, verify, MDS shards",
    "evals": "the test sets in the config (ImageNetV2, -A, -R, -Sketch; 13 GB): download, verify, MDS shards",
    "TESTSET": "one test set only: download, verify, MDS shards",
}

if __name__ == "__main__":
    for name, line in SUMMARY.items():
        print(f"{name}|{line}")
