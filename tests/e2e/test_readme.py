"""The README's first screens, as a user copies them: the training snippet runs verbatim (on CUDA where
there is a GPU, else on the CPU) against DATA/mds, and a folder that holds no shards is one line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from how_to_imagenet.pipeline.layout import Paths
from how_to_imagenet.testing.runs import ENV, PROJECT


def snippet(section: str) -> str:
    """The first python block under the README heading `section`."""
    text = (PROJECT / "README.md").read_text()
    after = text[text.index(f"\n## {section}\n"):]
    block = re.search(r"```python\n(.*?)```", after, re.S)
    assert block is not None, section
    return block.group(1)


def test_the_readmes_training_snippet_runs_verbatim_on_data_mds(built: Path, tmp_path: Path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mds").symlink_to(Paths(built).mds_root)
    code = snippet("Use it in training") + "print(tuple(x.shape), x.dtype, x.device.type, len(y))\n"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(PROJECT / "src")})
    assert done.returncode == 0, done.stderr
    *shape, dtype, device, n = done.stdout.split()
    assert dtype == "torch.float32" and device in ("cpu", "cuda") and int(n) > 0 and shape[-2:] == ["224,", "224)"]


def test_a_folder_without_shards_is_one_line(tmp_path: Path):
    from how_to_imagenet import ImageNetLoader

    with pytest.raises(FileNotFoundError) as e:
        ImageNetLoader(local=str(tmp_path / "data/mds"), split="val", batch_size=4)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{tmp_path}/data/mds/ILSVRC2012_img_val: no MDS shards")
    assert "local= is DATA/mds" in line
