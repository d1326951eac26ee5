"""Child process of :func:`coreai_opt.runtime.run_asset`: run one asset, save its outputs.

The Core AI runtime sometimes aborts while tearing a loaded model down
("C++ exception handling detected but the Swift runtime was compiled with
exceptions disabled"), after the outputs are computed. So the outputs are
saved from inside the loaded-model block and the process ends right there with
``os._exit``, skipping the teardown. The compiled model lives in the parent's
temporary directory (``TMPDIR``), which the parent removes.
"""

from __future__ import annotations

import asyncio
import os
import sys

import numpy as np


async def _run_and_save(asset_path: str, inputs: dict[str, np.ndarray], function: str, out_path: str) -> None:
    import coreai.runtime as rt
    from coreai.authoring import AIModelAsset

    from coreai_opt.runtime import save_arrays

    asset = AIModelAsset.load(asset_path)
    async with asset.executable() as model:
        loaded = model.load_function(function)
        outputs = await loaded(inputs={name: rt.NDArray(np.ascontiguousarray(v)) for name, v in inputs.items()})
        arrays = {name: np.array(value.numpy(), copy=True) for name, value in outputs.items()}
        partial = f"{out_path}.partial.npz"
        save_arrays(partial, arrays)
        os.replace(partial, out_path)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def main(argv: list[str]) -> int:
    from coreai_opt.runtime import load_arrays

    asset_path, in_path, out_path, function = argv
    asyncio.run(_run_and_save(asset_path, load_arrays(in_path), function, out_path))
    return 1  # not reached: _run_and_save ends the process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
