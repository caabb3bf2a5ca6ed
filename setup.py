"""The compiled part and the packaged defaults; everything else is in pyproject.toml.

how_to_imagenet._crops, the loader's threaded JPEG crop decoder, is built against the system's
libjpeg-turbo (Debian: libjpeg62-turbo-dev). Optional: where it cannot be built, the loader decodes
with Pillow instead (slower, the same pixels).

The defaults the command runs with (the repository's top-level config.yaml, torrents/ and checksums/,
the one copy) are packed into the wheel as how_to_imagenet/defaults/ (config.defaults_folder).
"""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

DEFAULTS = ("config.yaml", "torrents", "checksums")


class BuildWithDefaults(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "how_to_imagenet" / "defaults"
        for name in DEFAULTS:
            source = Path(__file__).parent / name
            if source.is_dir():
                shutil.copytree(source, target / name, dirs_exist_ok=True)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)


setup(cmdclass={"build_py": BuildWithDefaults},
      ext_modules=[Extension("how_to_imagenet._crops", ["src/how_to_imagenet/_crops.c"], libraries=["jpeg"],
                             extra_compile_args=["-O3", "-pthread"], extra_link_args=["-pthread"], optional=True)])
