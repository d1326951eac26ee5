"""Regenerate the bundled example model ``small.aimodel``.

Needs torch and coreai-torch (the ``test`` extras)::

    python -m coreai_opt.examples.make_example            # rewrite the bundled copy
    python -m coreai_opt.examples.make_example -o x.aimodel

The model is a small float32 image classifier, input ``image`` of shape
1x3x32x32, output 10 logits::

    conv 3->32 (3x3)  -> relu -> max pool     864 weights (below the default threshold)
    conv 32->64 (3x3) -> relu -> max pool     18,432
    conv 64->128 (3x3) -> relu -> avg pool 4x4 73,728
    linear 2048->256 -> relu                 524,288
    linear 256->256 -> relu                   65,536
    linear 256->10                             2,560

Everything is seeded, the creation date in ``metadata.json`` is fixed and its keys
sorted, so running the script again gives the same files. (The bytecode's debug
information records the paths and content hashes of the Python sources the layers
come from, this script included: the files are identical only when regenerated
from the same sources and installation paths.)
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path

SEED = 0
#: 2026-01-01T00:00:00Z: a fixed creation date keeps metadata.json reproducible.
CREATION_DATE = 1767225600.0
INPUT_SHAPE = (1, 3, 32, 32)


def build_module():
    """The seeded torch module (weights drawn with torch's default initialisation)."""
    import torch
    from torch import nn

    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
            )
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(128 * 4 * 4, 256), nn.ReLU(),
                nn.Linear(256, 256), nn.ReLU(),
                nn.Linear(256, 10),
            )

        def forward(self, image):
            return self.classifier(self.features(image))

    torch.manual_seed(SEED)
    return SmallCNN().float().eval()


def build_program():
    """Convert the module to a Core AI ``AIProgram`` with coreai-torch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # coreai-torch warns about the torch version it was validated with
        import coreai_torch
        import torch

        module = build_module()
        example = (torch.zeros(INPUT_SHAPE, dtype=torch.float32),)
        exported = torch.export.export(module, example).run_decompositions()
        converter = coreai_torch.TorchConverter()
        converter.add_exported_program(exported)
        return converter.to_coreai()


def _sort_metadata(path: Path) -> None:
    """Rewrite metadata.json with sorted keys (the writer's key order varies from run to run)."""
    document = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_example(path: Path) -> Path:
    """Build the model and save it at ``path`` (replacing what is there only once saved)."""
    path = Path(path)
    if path.suffix != ".aimodel":
        raise ValueError(f"the output must end in .aimodel, got {path}")
    program = build_program()
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{path.name}.tmp-", dir=path.parent))
    try:
        asset = program.save_asset(staging / path.name)

        def _fix_date(metadata) -> None:
            metadata.creation_date = CREATION_DATE
            metadata.model_description = "coreai_opt example: small CNN + MLP, float32, random seeded weights"

        asset.update_metadata(_fix_date)
        _sort_metadata(staging / path.name / "metadata.json")
        if path.exists():
            shutil.rmtree(path)
        (staging / path.name).rename(path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the coreai_opt example model.")
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).resolve().parent / "small.aimodel",
                        help="where to write the asset (default: the bundled small.aimodel)")
    args = parser.parse_args(argv)
    path = write_example(args.output)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    print(f"wrote {path} ({size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
