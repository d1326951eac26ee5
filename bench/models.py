"""The benchmark's input programs: MiniLM-L6 (converted) and a synthetic transformer.

Both are built once and cached under ``bench/out/``; later runs reuse the saved assets.
"""

from __future__ import annotations

import pathlib
import sys
from dataclasses import dataclass

import numpy as np

BENCH = pathlib.Path(__file__).resolve().parent
OUT = BENCH / "out"
TESTS = BENCH.parent / "tests"


# --------------------------------------------------------------------------- MiniLM


def minilm(out: pathlib.Path = OUT):
    """MiniLM-L6 as a saved asset with its inputs and fp32 reference (``helpers.minilm.MiniLM``)."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from helpers.minilm import MiniLM, build_minilm

    directory = out / "minilm"
    cache = directory / "minilm.npz"
    asset = directory / "minilm.aimodel"
    if cache.exists() and asset.exists():
        with np.load(cache) as data:
            inputs = {"ids": data["ids"], "mask": data["mask"]}
            return MiniLM(asset, inputs, data["reference"])
    directory.mkdir(parents=True, exist_ok=True)
    model = build_minilm(directory)
    np.savez(cache, reference=model.reference, **model.inputs)
    return model


# --------------------------------------------------------------------------- synthetic


@dataclass(frozen=True)
class Synthetic:
    """A transformer-shaped float16 program: an embedding table and ``blocks`` blocks of
    4 attention projections (hidden x hidden) and a gated MLP (2 x hidden x ffn, ffn x hidden)."""

    blocks: int
    hidden: int = 2048
    ffn: int = 8192
    vocab: int = 32000
    tokens: int = 8
    seed: int = 0

    @property
    def name(self) -> str:
        return f"synthetic-{self.blocks}"

    @property
    def asset(self) -> pathlib.Path:
        extra = "" if (self.hidden, self.ffn, self.vocab, self.seed) == (2048, 8192, 32000, 0) \
            else f"-h{self.hidden}-f{self.ffn}-v{self.vocab}-s{self.seed}"
        return OUT / f"synthetic-{self.blocks}{extra}.aimodel"

    def shapes(self) -> list[tuple[int, int]]:
        """Weight shapes in the order the program consumes them."""
        h, f = self.hidden, self.ffn
        block = [(h, h)] * 4 + [(h, f), (h, f), (f, h)]
        return [(self.vocab, h)] + block * self.blocks

    @property
    def weight_count(self) -> int:
        return sum(rows * cols for rows, cols in self.shapes())

    def weight(self, index: int) -> np.ndarray:
        """Weight ``index`` (same order as :meth:`shapes`), regenerated bit-exactly from the seed:
        normal with std 0.02 plus 16 outliers of 10-25 std, generated in row chunks so only
        the float16 result is ever whole in memory."""
        rows, cols = self.shapes()[index]
        rng = np.random.default_rng([self.seed, index])
        out = np.empty((rows, cols), np.float16)
        chunk = max(1, (1 << 22) // cols)
        for start in range(0, rows, chunk):
            stop = min(rows, start + chunk)
            block = rng.standard_normal((stop - start, cols), dtype=np.float32)
            block *= 0.02
            out[start:stop] = block
        flat = out.reshape(-1)
        where = rng.choice(flat.size, 16, replace=False)
        flat[where] = (rng.uniform(0.2, 0.5, 16) * rng.choice([-1.0, 1.0], 16)).astype(np.float16)
        return out


def build_synthetic(spec: Synthetic) -> pathlib.Path:
    """Build ``spec`` with the Core AI authoring API and save it (cached by parameters)."""
    from typing import Annotated

    from coreai.authoring import (
        AIProgram, Module, TensorSpec, Value, add, broadcasting_batch_matmul, gather_nd, graph, mul,
    )
    from coreai.authoring.constant import constant

    if spec.asset.exists():
        return spec.asset
    counter = iter(range(len(spec.shapes())))

    def weight() -> Value:
        return constant(spec.weight(next(counter)))

    def linear(x: Value) -> Value:
        return broadcasting_batch_matmul(x, weight())

    ids_spec = TensorSpec((spec.tokens, 1), np.int32, name="ids")
    out_spec = TensorSpec((spec.tokens, spec.hidden), np.float16, name="hidden")

    def main(ids):
        x = gather_nd(weight(), ids)
        for _ in range(spec.blocks):
            q, k, v = linear(x), linear(x), linear(x)
            x = add(x, linear(add(add(q, k), v)))
            gate, up = linear(x), linear(x)
            x = add(x, linear(mul(gate, up)))
        return x

    # Real (not string) annotations: this module uses ``from __future__ import annotations``.
    main.__annotations__ = {"ids": Annotated[Value, ids_spec], "return": Annotated[Value, out_spec]}
    module = Module.create()
    with module:
        graph(main)
    spec.asset.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.asset.with_name(spec.asset.stem + ".partial.aimodel")
    AIProgram(module).save_asset(tmp)
    tmp.rename(spec.asset)
    return spec.asset
