"""Child process of :func:`coreai_opt.runtime.run_asset`: run one asset, save its outputs."""

from __future__ import annotations

import asyncio
import sys

import numpy as np


async def _run(asset_path: str, inputs: dict[str, np.ndarray], function: str) -> dict[str, np.ndarray]:
    import coreai.runtime as rt
    from coreai.authoring import AIModelAsset

    asset = AIModelAsset.load(asset_path)
    async with asset.executable() as model:
        loaded = model.load_function(function)
        outputs = await loaded(inputs={name: rt.NDArray(np.ascontiguousarray(v)) for name, v in inputs.items()})
        return {name: np.array(value.numpy(), copy=True) for name, value in outputs.items()}


def main(argv: list[str]) -> int:
    from coreai_opt.runtime import load_arrays, save_arrays

    asset_path, in_path, out_path, function = argv
    outputs = asyncio.run(_run(asset_path, load_arrays(in_path), function))
    save_arrays(out_path, outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
