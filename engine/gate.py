"""The harmony gate: how much of the estimated correction to apply, from 0 (leave the person alone) to 1.

The colour prior and the network were trained on composites that always needed a correction, and they
always propose one: on a person whose light already fits the scene they shift the colours anyway, and
on composites that were nearly right they over-correct (docs/model_card.md, "Do no harm"). The direction
of their correction is mostly right; its amount is not. The gate is a small MLP that looks at the
composite's colour statistics (the person's against the background's, as the prior does) and at the
person as the correction would leave them, and says how much of the correction to keep:

    corrected = identity + amount * (correction - identity)

It is fitted (trainer.gate) on fresh composites of every strength, including ones that need nothing and
camera-like frames, to maximise the PSNR gain of the blended output while penalising any loss. None ships
yet: the one fitted halves the composites made worse, but it also leaves a real person on a virtual
background uncorrected (it learned to spot unnatural colours, not a mismatch with the scene;
docs/model_card.md, "Do no harm"). The Harmonizer uses a gate only where one lies beside the weights.

NumPy only: it runs beside the colour prior on the network-size picture (a few ms per estimate).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.colour_prior import FEATURES as PRIOR_FEATURES
from engine.colour_prior import (
    REGION_FEATURES,
    checked_mlp,
    mlp_output,
    region_features,
    region_features_torch,
)

#: The shipped gate, fitted for the shipped weights: a gate lies beside the weights it was fitted for as
#: `<weights stem>.gate.safetensors` (gate_path).
GATE_PATH = Path(__file__).resolve().parent / "weights" / "default.gate.safetensors"
FORMAT = "vcam-harmony-gate"
#: The composite's colour features (engine.colour_prior.colour_features), then the corrected person's
#: region features less the reference's and less the uncorrected person's.
FEATURES = PRIOR_FEATURES + 2 * REGION_FEATURES


def gate_features(features: np.ndarray, corrected: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(FEATURES,) inputs of the gate.

    Args:
        features: the composite's engine.colour_prior.colour_features (person, reference, their
            difference, the person's share), as the prior computed them.
        corrected: (H, W, 3) float in [0, 1], the network-size picture with the correction applied to the
            person.
        mask: (H, W) float in [0, 1], the person (>= 0.5 counts, as in colour_features).
    """
    features = np.asarray(features, np.float64)
    if features.shape != (PRIOR_FEATURES,):
        raise ValueError(f"features must be ({PRIOR_FEATURES},) colour features, got {features.shape}")
    person = np.asarray(mask).reshape(-1) >= 0.5
    values = np.asarray(corrected, np.float64).reshape(-1, 3)[person]
    person_before = features[:REGION_FEATURES]
    reference = features[REGION_FEATURES:2 * REGION_FEATURES]
    # Too small a person to describe: its statistics are taken as unchanged (the prior does the same).
    person_after = region_features(values) if len(values) >= 8 else person_before
    return np.concatenate([features, person_after - reference, person_after - person_before])


class Gate:
    """The MLP: standardised features -> GELU -> GELU -> max_amount * sigmoid(.)."""

    def __init__(self, tensors: dict[str, np.ndarray], max_amount: float = 1.0):
        if not 0 < max_amount <= 2:
            raise ValueError(f"gate max_amount must be in (0, 2], got {max_amount}")
        self.tensors = checked_mlp(tensors, FEATURES, 1, "gate", "trainer.gate")
        self.max_amount = float(max_amount)

    def __call__(self, features: np.ndarray) -> np.ndarray | float:
        """The amount in [0, max_amount] for (FEATURES,) features (a float) or (N, FEATURES) ((N,))."""
        logit = np.clip(mlp_output(self.tensors, features)[..., 0], -30, 30)
        amount = self.max_amount / (1.0 + np.exp(-logit))
        return float(amount) if amount.ndim == 0 else amount

    @classmethod
    def load(cls, path: str | os.PathLike = GATE_PATH) -> Gate:
        """Read a trainer.gate file.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a gate, or tensors of the wrong shape or not finite.
        """
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"harmony gate not found: {path} (fit one: python -m trainer.gate)")
        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                tensors = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a harmony gate (format {meta.get('format')!r}, expected {FORMAT!r})")
        try:
            max_amount = float(meta.get("max_amount", "1.0"))
        except ValueError:
            raise ValueError(f"{path}: max_amount {meta.get('max_amount')!r} is not a number") from None
        return cls(tensors, max_amount)

    def save(self, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v, np.float32) for k, v in self.tensors.items()}
        save_file(tensors, str(path), metadata={"format": FORMAT, "max_amount": repr(self.max_amount),
                                                **(metadata or {})})
        return path


@lru_cache(maxsize=4)
def load_gate(path: str = str(GATE_PATH)) -> Gate:
    """A gate file, read once per process."""
    return Gate.load(path)


def gate_path(model) -> Path | None:
    """Where the gate fitted for a model's weights lies (`<weights>.gate.safetensors`), or None for a
    model that was not loaded from a weights file."""
    source = getattr(model, "weights_path", None)
    return None if source is None else Path(source).with_suffix(".gate.safetensors")


def gate_for(model) -> Gate | None:
    """The gate fitted for a model's weights, loaded; None where none lies beside them (another model's
    corrections were never judged by it).

    Raises:
        ValueError: the file exists but is not a readable gate.
    """
    path = gate_path(model)
    return load_gate(str(path)) if path is not None and path.is_file() else None


def scale_correction(data: np.ndarray, identity: np.ndarray, amount: float) -> np.ndarray:
    """identity + amount * (data - identity), float32: a correction's parameters moved towards doing
    nothing. Every correction vcam applies is linear in its parameters, so this blends the outputs too."""
    data = np.asarray(data, np.float32)
    identity = np.asarray(identity, np.float32)
    a = np.float32(amount)
    # amount * data + (1 - amount) * identity: exact at both ends (0 and 1), where the other form rounds.
    return (a * data + (np.float32(1) - a) * identity).astype(np.float32, copy=False)


# -- the same on a torch device (engine.gpu_frame): static shapes, no host round trip, CUDA-graph safe -----

class TorchGate:
    """A Gate's MLP as device tensors: `amount(features, corrected, mask)` -> a 0-d tensor on the device."""

    def __init__(self, gate: Gate, device, dtype=None):
        import torch

        from engine.colour_prior import torch_constants

        dtype = dtype or torch.float32
        self.tensors = {k: torch.as_tensor(v, dtype=dtype).to(device) for k, v in gate.tensors.items()}
        self.max_amount = gate.max_amount
        self.constants = torch_constants(device, dtype)

    def features(self, features, corrected, mask):
        """gate_features on a device: features (PRIOR_FEATURES,) from colour_features_torch, corrected
        (1, 3, h, w) in [0, 1], mask (1, 1, h, w)."""
        import torch

        person = mask[0, 0].flatten() >= 0.5
        values = corrected[0].flatten(1).T
        before = features[:REGION_FEATURES]
        reference = features[REGION_FEATURES:2 * REGION_FEATURES]
        after = torch.where(person.sum() >= 8, region_features_torch(values, person, self.constants), before)
        return torch.cat([features, after - reference, after - before])

    def amount(self, features, corrected, mask):
        import torch
        import torch.nn.functional as F

        t = self.tensors
        h = (self.features(features, corrected, mask) - t["mean"]) / t["scale"]
        h = F.gelu(h @ t["w1"].T + t["b1"], approximate="tanh")
        h = F.gelu(h @ t["w2"].T + t["b2"], approximate="tanh")
        logit = (h @ t["w3"].T + t["b3"])[0].clamp(-30, 30)
        return self.max_amount * torch.sigmoid(logit)


__all__ = ["FEATURES", "GATE_PATH", "Gate", "gate_features", "gate_for", "gate_path", "load_gate", "scale_correction", "TorchGate"]
