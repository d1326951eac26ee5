"""Small real programs converted from torch.nn modules with coreai-torch."""

from __future__ import annotations

import warnings

import numpy as np


def convert(module, example_args):
    """Convert a torch module to a Core AI ``AIProgram`` the documented way."""
    import coreai_torch
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = torch.export.export(module.eval(), example_args).run_decompositions()
        converter = coreai_torch.TorchConverter()
        converter.add_exported_program(exported)
        return converter.to_coreai()


def small_net(dtype: str = "float32", seed: int = 0):
    """(torch module, example args as torch tensors, numpy inputs) for an Embedding + Linear + Conv2d net.

    Weight sizes: embedding 100x64 (6400), linear 48x64 (3072), conv 16x8x3x3 (1152).
    """
    import torch

    class SmallNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(100, 64)
            self.lin = torch.nn.Linear(64, 48)
            self.conv = torch.nn.Conv2d(8, 16, 3)

        def forward(self, ids, img):
            return self.lin(self.emb(ids)), self.conv(img)

    torch.manual_seed(seed)
    net = SmallNet()
    torch_dtype = getattr(torch, dtype)
    net = net.to(torch_dtype).eval()
    ids = torch.randint(0, 100, (2, 5))
    img = torch.randn(1, 8, 8, 8).to(torch_dtype)
    inputs = {"ids": ids.numpy().astype(np.int32), "img": img.float().numpy().astype(np.dtype(dtype))}
    return net, (ids, img), inputs


def small_net_forward(weights: dict[str, np.ndarray], net, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Numpy forward pass of ``small_net`` with the given (decoded) weights, in float64."""
    emb = weights["emb"].astype(np.float64)
    lin = weights["lin"].astype(np.float64)
    conv = weights["conv"].astype(np.float64)
    lin_bias = net.lin.bias.detach().float().numpy().astype(np.float64)
    conv_bias = net.conv.bias.detach().float().numpy().astype(np.float64)
    hidden = emb[inputs["ids"]]
    out_lin = hidden @ lin.T + lin_bias
    img = inputs["img"].astype(np.float64)
    kh, kw = conv.shape[2:]
    height, width = img.shape[2] - kh + 1, img.shape[3] - kw + 1
    patches = np.stack([img[:, :, i : i + height, j : j + width] for i in range(kh) for j in range(kw)], axis=-1)
    patches = patches.reshape(img.shape[0], img.shape[1], height, width, kh, kw)
    out_conv = np.einsum("bchwij,ocij->bohw", patches, conv) + conv_bias[None, :, None, None]
    return [out_lin, out_conv]
