"""The example model bundled with the package, for trying the CLI and the API.

``small.aimodel`` is a small float32 image classifier (three convolutions, then a
three-layer MLP) with random, seeded weights; ``make_example.py`` regenerates it.
"""

from __future__ import annotations

from pathlib import Path

EXAMPLE_NAME = "small.aimodel"


def example_path() -> Path:
    """Path of the bundled example asset (``small.aimodel``, a directory)."""
    path = Path(__file__).resolve().parent / EXAMPLE_NAME
    if not path.is_dir():
        raise FileNotFoundError(
            f"the bundled example model is missing ({path}); "
            "regenerate it with: python -m coreai_opt.examples.make_example"
        )
    return path


__all__ = ["EXAMPLE_NAME", "example_path"]
