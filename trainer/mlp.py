"""The small MLPs trainer.prior and trainer.gate fit on colour statistics, built and exported one way.

Both are: standardised features -> dropout -> linear -> GELU (tanh form, what engine.colour_prior.gelu
computes) -> dropout -> linear -> GELU -> dropout -> linear; the file format (mean, scale, w1..b3) is the
one engine.colour_prior.checked_mlp reads.
"""

from __future__ import annotations

import numpy as np
import torch


def standardised(features: np.ndarray) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """(mean, scale, the standardised features as a float32 tensor)."""
    mean = features.mean(0)
    scale = features.std(0) + 1e-6
    return mean, scale, torch.from_numpy(((features - mean) / scale).astype(np.float32))


def make_mlp(inputs: int, hidden: int, outputs: int, dropout: float) -> torch.nn.Sequential:
    """The network (its three linear layers at 1, 4 and 7), the last one's weight zero."""
    gelu = torch.nn.GELU(approximate="tanh")
    net = torch.nn.Sequential(torch.nn.Dropout(dropout / 2), torch.nn.Linear(inputs, hidden), gelu,
                              torch.nn.Dropout(dropout), torch.nn.Linear(hidden, hidden), gelu,
                              torch.nn.Dropout(dropout), torch.nn.Linear(hidden, outputs))
    torch.nn.init.zeros_(net[-1].weight)
    return net


def mlp_tensors(net: torch.nn.Sequential, mean: np.ndarray, scale: np.ndarray) -> dict[str, np.ndarray]:
    """The file's tensors of a `make_mlp` network and its standardisation."""
    tensors = {"mean": mean, "scale": scale}
    for k, layer in enumerate((net[1], net[4], net[7]), 1):
        tensors[f"w{k}"] = layer.weight.detach().numpy().copy()
        tensors[f"b{k}"] = layer.bias.detach().numpy().copy()
    return tensors
