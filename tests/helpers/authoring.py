"""Tiny programs authored by hand with coreai.authoring, for the awkward cases."""

from __future__ import annotations

import inspect
from typing import Annotated

import numpy as np

import coreai.authoring as ca
from coreai.authoring import AIProgram, Module, TensorSpec, Value, graph
from coreai.authoring.constant import constant


def _annotated(shape, dtype, name):
    return Annotated[Value, TensorSpec(shape, dtype, name=name)]


def _graph_function(name, build, inputs, outputs):
    parameters = [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_annotated(*spec, n))
                  for n, spec in inputs.items()]
    if isinstance(outputs, dict):
        results = tuple(_annotated(*spec, n) for n, spec in outputs.items())
        returns = tuple.__class_getitem__(results)
    else:
        returns = _annotated(*outputs, "out")

    def function(*args):
        return build(*args)

    function.__name__ = function.__qualname__ = name
    function.__signature__ = inspect.Signature(parameters, return_annotation=returns)
    function.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    return function


def program(build, inputs: dict[str, tuple[tuple[int, ...], type]], output, *more_graphs) -> AIProgram:
    """A program with graph ``main`` computing ``build(*inputs)``; every input and output is named.

    ``inputs`` maps names to (shape, numpy dtype). ``output`` is (shape, dtype) for one output
    named ``out``, or a dict of name -> (shape, dtype) for several (``build`` returns a tuple).
    ``more_graphs`` are extra (name, build, inputs, output) graphs in the same program.
    """
    module = Module.create()
    with module:
        for name, body, ins, outs in (("main", build, inputs, output), *more_graphs):
            graph(_graph_function(name, body, ins, outs))
    return AIProgram(module)


def weight(shape, seed=0, dtype=np.float32, scale=1.0) -> np.ndarray:
    """A seeded normal weight."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def const(array: np.ndarray) -> Value:
    """A ``coreai.constant`` holding ``array``."""
    return constant(array)


__all__ = ["ca", "const", "program", "weight"]
