"""Shared fixtures: the ImageNet-shaped fixture built once per session in a temporary folder and
served on 127.0.0.1 as its torrents' web seed, DATA after the whole pipeline ran on it, a larger
fixture to interrupt, an S3 server (moto) on loopback, and the library installed from a wheel.
Helpers live in how_to_imagenet.testing."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from how_to_imagenet.labels import wnids
from how_to_imagenet.testing.evals import add_evals
from how_to_imagenet.testing.fixture import bench_photos, build
from how_to_imagenet.testing.runs import ENV, PROJECT, Fixture, free_port, make, streaming_shm_closed
from how_to_imagenet.testing.webseed import serve

# Session fixtures that take seconds to build, each built by every pytest-xdist worker that runs a test
# using it: the tests that use one run in one worker (make test passes --dist loadgroup), which builds it once.
ONE_WORKER = ("evals", "big", "installed", "s3")


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the marks into node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if costly := [name for name in ONE_WORKER if name in getattr(item, "fixturenames", ())]:
            item.add_marker(pytest.mark.xdist_group(costly[0]))


@pytest.fixture(autouse=True)
def own_shared_memory_freed() -> Iterator[None]:
    """After each test, the streaming shared memory its datasets opened is closed, and unlinked where they
    made it (`streaming_shm_closed`): the datasets tests make in-process would otherwise fill the open-file
    table."""
    with streaming_shm_closed():
        yield


@pytest.fixture(scope="session")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    root = tmp_path_factory.mktemp("fixture")
    server = serve(root)
    url = f"http://127.0.0.1:{server.server_port}/"
    yield Fixture(root=root, config=build(root, url), url=url, server=server)
    server.shutdown()


@pytest.fixture(scope="session")
def built(fixture: Fixture, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DATA after `make all folders` on the fixture (both splits, every stage); tests must not change it."""
    data = tmp_path_factory.mktemp("data")
    make("all", "folders", f"CONFIG={fixture.config}", f"DATA={data}")
    return data


@pytest.fixture(scope="session")
def evals(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fixture, dict]]:
    """The fixture with the six test sets beside train and val, in their real layouts, served on
    127.0.0.1 (http sources, aria2c fetches them); and each test set's images as mds must write them
    (`testing.evals.expected`: y, file name, bytes)."""
    root = tmp_path_factory.mktemp("evals")
    server = serve(root)
    url = f"http://127.0.0.1:{server.server_port}/"
    config, truth = add_evals(root, build(root, url), url)
    yield Fixture(root=root, config=config, url=url, server=server), truth
    server.shutdown()


@pytest.fixture(scope="session")
def evals_built(evals: tuple[Fixture, dict], tmp_path_factory: pytest.TempPathFactory) -> dict:
    """DATA after `make mds-val evals` on the evals fixture (Sketch's source a URL that is not there,
    its mirror the archive), with what `make status` said before and what make said; tests must not
    change it."""
    fixture, _ = evals
    data = tmp_path_factory.mktemp("evals-data")
    before = make("status", f"CONFIG={fixture.config}", f"DATA={data}").stdout
    config = fixture.variant("mirror", **{"splits.imagenet-sketch.source": fixture.url + "gone.zip",
                                          "splits.imagenet-sketch.mirrors": [fixture.url + "ImageNet-Sketch.zip"]})
    done = make("mds-val", "evals", f"CONFIG={config}", f"DATA={data}")
    return {"data": data, "config": config, "before": before, "stdout": done.stdout, "stderr": done.stderr}


@pytest.fixture(scope="session")
def big(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    """A larger fixture (about 220 MB of 110 KB JPEGs, local sources), so a stage runs long enough
    to be interrupted in the middle."""
    root = tmp_path_factory.mktemp("big")
    config = build(root, seed=2, wnids=wnids()[::50], train_per_class=100, val_per_class=5,
                   photos=bench_photos(random.Random(2), 16),
                   mds={"size_limit": 1 << 22, "shuffle_seed": 0, "hashes": ["xxh64"]})
    return Fixture(root=root, config=config, url="")


@pytest.fixture(scope="session")
def s3() -> Iterator[dict[str, str]]:
    """An S3 API on 127.0.0.1 (moto_server) with a bucket `imagenet`; the environment to reach it."""
    server = Path(sys.executable).parent / "moto_server"
    if not server.exists():
        pytest.skip("moto_server is not installed (pip install 'moto[server]', in requirements-dev.txt)")
    port = free_port()
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "moto_server did not start"
            time.sleep(0.1)
    env = {"S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    import boto3

    boto3.client("s3", endpoint_url=env["S3_ENDPOINT_URL"], aws_access_key_id="testing",
                 aws_secret_access_key="testing", region_name="us-east-1").create_bucket(Bucket="imagenet")
    yield env
    proc.terminate()
    proc.wait()


# What the wheel is built from: a user's `pip install <a clone>` sees these.
WHEEL_SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "requirements.txt", "README.md", "LICENSE", "src",
                 "config.yaml", "torrents", "checksums")


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new venv with the wheel installed (its console script `how-to-imagenet` beside
    it); its dependencies (torch, streaming, ...) are this venv's, seen through a .pth file, as
    installing them again would take minutes."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in WHEEL_SOURCES:
        (shutil.copytree if (PROJECT / name).is_dir() else shutil.copy)(PROJECT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(root / "dist"), str(source)], check=True, env=ENV)
    wheel = next((root / "dist").glob("how_to_imagenet-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "how_to_imagenet/data/ilsvrc2012_synsets.txt" in names and "how_to_imagenet/loader.py" in names
    assert "how_to_imagenet/pipeline/stages/mds.py" in names and "how_to_imagenet/defaults/config.yaml" in names
    assert not [n for n in names if "/testing/" in n], names
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # This pip, run for the new venv's python: the console script's first line is that python.
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
                    str(wheel)], check=True, env=ENV)
    return python
