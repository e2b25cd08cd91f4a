"""PHNet's staged schedule: ``--stages KIND:STEPS:LR,...`` parsed, the stage a step belongs to, and what each
stage trains (1: no PFE, everything; 2: PFE on, encoder frozen; 3: PFE on, everything) with a fresh optimiser."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer.lion import Lion

STAGE_KINDS = {
    1: {"use_pfe": False, "freeze_encoder": False},
    2: {"use_pfe": True, "freeze_encoder": True},
    3: {"use_pfe": True, "freeze_encoder": False},
}


@dataclass(frozen=True)
class Stage:
    kind: int  # 1, 2 or 3 (STAGE_KINDS)
    steps: int
    lr: float


def parse_stages(text: str) -> list[Stage]:
    """``"1:1000:1e-4,2:100:1e-5"`` -> [Stage(1, 1000, 1e-4), Stage(2, 100, 1e-5)].

    Raises:
        ValueError: on a malformed entry, an unknown kind, or a non-positive step count / negative lr.
    """
    stages = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        fields = part.split(":")
        try:
            kind, steps, lr = int(fields[0]), int(fields[1]), float(fields[2])
            if len(fields) != 3:
                raise IndexError
        except (IndexError, ValueError):
            raise ValueError(f"--stages entry {part!r} is not KIND:STEPS:LR (e.g. 1:1000:1e-4)") from None
        if kind not in STAGE_KINDS:
            raise ValueError(f"--stages kind must be one of {sorted(STAGE_KINDS)}, got {kind} in {part!r}")
        if steps <= 0 or lr < 0:
            raise ValueError(f"--stages entry {part!r}: steps must be > 0 and lr >= 0")
        stages.append(Stage(kind, steps, lr))
    if not stages:
        raise ValueError("--stages is empty")
    return stages


def stage_at(stages: list[Stage], step: int) -> int:
    """Index of the stage that global step ``step`` (0-based) belongs to."""
    end = 0
    for i, stage in enumerate(stages):
        end += stage.steps
        if step < end:
            return i
    return len(stages) - 1


def encoder_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names of the encoder's parameters (what stage 2 freezes)."""
    return {n for n, _ in model.named_parameters() if n.split(".")[0] == "encoder"}


def apply_stage(model: torch.nn.Module, stage: Stage, device: torch.device, world: int):
    """Switch PFE and the encoder's trainability for ``stage``; return (wrapped model, fresh optimiser)."""
    spec = STAGE_KINDS[stage.kind]
    if hasattr(model, "config") and hasattr(model.config, "use_pfe"):
        model.config.use_pfe = spec["use_pfe"]
    frozen = encoder_parameter_names(model) if spec["freeze_encoder"] else set()
    for name, p in model.named_parameters():
        p.requires_grad_(name not in frozen)
    trainable = [p for p in model.parameters() if p.requires_grad]
    wrapped = model
    if world > 1:
        # Re-wrapped at every stage: DDP fixes the set of trainable parameters when it is built, and
        # stage 1 leaves the PFE's parameters unused.
        wrapped = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                          find_unused_parameters=True)
    return wrapped, Lion(trainable, lr=stage.lr, weight_decay=0.0)
