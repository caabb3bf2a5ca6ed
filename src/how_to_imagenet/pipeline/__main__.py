"""python -m how_to_imagenet.pipeline: the same command as `how-to-imagenet` (pipeline/command.py)."""

from .command import run

if __name__ == "__main__":
    run()
