"""python -m how_to_imagenet: the command `how-to-imagenet` (pipeline/command.py)."""

from .pipeline.command import run

if __name__ == "__main__":
    run()
