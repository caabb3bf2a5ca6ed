"""The one compiled part: how_to_imagenet._crops, the loader's threaded JPEG crop decoder, built against the
system's libjpeg-turbo (Debian: libjpeg62-turbo-dev). Optional: where it cannot be built, the loader decodes
with Pillow instead (slower, the same pixels). Everything else is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("how_to_imagenet._crops", ["src/how_to_imagenet/_crops.c"], libraries=["jpeg"],
                             extra_compile_args=["-O3", "-pthread"], extra_link_args=["-pthread"], optional=True)])
