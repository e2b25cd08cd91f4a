"""Eager PyTorch backend: the reference every other backend is compared with (CPU or CUDA, fp32 or fp16)."""

from __future__ import annotations

import copy

import torch

from engine.backends.base import Backend, TorchArrays, module_description


def module_of(model) -> torch.nn.Module:
    """The nn.Module to run: `model` itself, or built from a weights file (engine.weights.ModelInfo)."""
    from engine.weights import ModelInfo

    return model.module() if isinstance(model, ModelInfo) else model


class TorchBackend(TorchArrays, Backend):
    """Runs the nn.Module itself under `torch.inference_mode()`.

    fp16 casts the model's weights once (a private copy, so the caller's model is left as it was) and
    casts inputs per call; outputs are always float32.
    """

    name = "torch"

    def __init__(self, model, device, precision: str = "fp32"):
        super().__init__(torch.device(str(device)), precision)
        model = module_of(model)
        self.model_name, self.stats_size, self.output_names, self._output_shape = module_description(model)
        self._dtype = torch.float16 if precision == "fp16" else torch.float32
        # A private copy: moving/casting the caller's module in place would surprise them (and other
        # backends built from the same model).
        self._model = copy.deepcopy(model).eval().to(device=self.device, dtype=self._dtype)
        for p in self._model.parameters():
            p.requires_grad_(False)

    def run(self, composite, mask, reference, stats_in, momentum):
        momentum = self.check_inputs(composite, mask, reference, stats_in, momentum)
        dt = self._dtype
        with torch.inference_mode():
            output, stats_out = self._model(composite.to(dt), mask.to(dt), reference.to(dt),
                                            stats_in.to(dt), momentum.to(dt))
        return output.float(), stats_out.float()

    def close(self) -> None:
        if not self._closed:
            self._model = None
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
        super().close()
