"""Tiny programs authored by hand with coreai.authoring, for the awkward cases."""

from __future__ import annotations

import inspect
from typing import Annotated

import numpy as np

import coreai.authoring as ca
from coreai.authoring import AIProgram, Module, TensorSpec, Value, graph
from coreai.authoring.constant import constant


def program(build, inputs: dict[str, tuple[tuple[int, ...], type]], output: tuple[tuple[int, ...], type]) -> AIProgram:
    """A one-graph program ``main`` computing ``build(*inputs)``, with named inputs and output ``out``.

    ``inputs`` maps names to (shape, numpy dtype); the runtime needs every input and output named.
    """
    def annotated(shape, dtype, name):
        return Annotated[Value, TensorSpec(shape, dtype, name=name)]

    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotated(*spec, name))
                  for name, spec in inputs.items()]

    def main(*args):
        return build(*args)

    main.__signature__ = inspect.Signature(parameters, return_annotation=annotated(*output, "out"))
    main.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": annotated(*output, "out")}
    module = Module.create()
    with module:
        graph(main)
    return AIProgram(module)


def weight(shape, seed=0, dtype=np.float32, scale=1.0) -> np.ndarray:
    """A seeded normal weight."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def const(array: np.ndarray) -> Value:
    """A ``coreai.constant`` holding ``array``."""
    return constant(array)


__all__ = ["ca", "const", "program", "weight"]
