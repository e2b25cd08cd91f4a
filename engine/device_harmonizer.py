"""engine.Harmonizer's estimate and apply on a torch device, the temporal state kept on the device.

The GPU frame path (engine.gpu_frame) moves frames on and off the device; this is the maths it runs on
each one, built from the same steps as the CPU path: the resize to the network's size
(engine.resampling.network_resize_torch, cv2's own weights), the no-person and no-reference checks, the
scene-change test (engine.scene), the colour prior and the gate (engine.colour_prior, engine.gate), the
chosen region's light (engine.corrections.reference_light_gain_torch), the temporal average of the
statistics and the correction (engine.corrections.ema, the Harmonizer's momentum for the frames since the
last estimate), the kept texture's gain (engine.recolour.contrast_gain_torch, keep_detail), and the app's
apply: the person's own colours re-coloured through the frame's 1/scale image
(engine.recolour.affine_corrected_fast_torch, with keep_detail the finer texture kept), mixed with them
by the strength, and composited over the background again (engine.blend.person_over_torch), as
`Harmonizer.apply(..., foreground=, background=)` does. Each of those is tested against its NumPy twin on
the CPU (tests/test_resampling.py), and the whole against engine.Harmonizer on a moving person
(tests/test_gpu_frame.py).

Every data-dependent decision is a `torch.where` on the device rather than a Python `if` on a tensor,
which would wait for the GPU and break a CUDA graph.

With `sharpness` (off by default, as in the app) the person's sharpening is detected on the whole frame and
undone before the transforms (engine.sharpness's torch twins). Not here (engine.Harmonizer has them): image
heads (a lift fitted per frame), the blend of a correction into a composite without the person's own
colours (Harmonizer.apply without foreground).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from engine import colour_prior, recolour, scene
from engine import gate as gate_mod
from engine import sharpness as sharpness_mod
from engine.blend import person_over_torch
from engine.corrections import (
    blend_linear_torch,
    ema,
    reference_light_gain_torch,
    scale_grid_outputs_torch,
    transform_torch,
)
from engine.harmonizer import NO_PERSON, NO_REFERENCE, REFERENCE_ADAPTATION, SCENE_CHANGE
from engine.resampling import network_resize_torch, resize_matrices, upsample_grid_torch


class DeviceHarmonizer:
    """Composite and harmonize frames of one size on one device; the state lives in device tensors.

    Args:
        model: an affine-head nn.Module already on the device in its precision (engine.gpu_frame checks it).
        frame_shape, net_shape: (H, W) of the frames, (h, w) the network runs at (engine.harmonizer.net_shape).
        dtype: the image maths' dtype (fp16 on CUDA: 0..255 integers are exact in it; fp32 on a CPU).
        reference: optional float32 (H, W) mask of the background region the person is matched to.
        prior, gate: the colour prior and the gate the weights name (engine.colour_prior.prior_for,
            engine.gate.gate_for), or None.
    """

    def __init__(self, model: torch.nn.Module, frame_shape: tuple[int, int], net_shape: tuple[int, int],
                 dtype: torch.dtype, reference: np.ndarray | None, prior, gate, sharpness: bool = False):
        dev = next(model.parameters()).device
        self.sharpness = sharpness
        self._sharpness = sharpness_mod.torch_constants(dev) if sharpness else None
        self.device, self.dtype, self.net_shape = dev, dtype, net_shape
        self._model, self._model_dtype = model, next(model.parameters()).dtype
        ry, rx_t = (torch.from_numpy(m).to(dev) for m in resize_matrices(frame_shape, net_shape))
        self._ry, self._rx_t = ry.to(dtype), rx_t.to(dtype)
        self._reference_low = None
        if reference is not None:  # fixed for the stream: resized once, in fp32
            ref = torch.from_numpy(np.clip(reference, 0, 1)).to(dev, torch.float32)[None, None]
            self._reference_low = network_resize_torch(ref, ry, rx_t).clamp(0, 1)
        self._prior = colour_prior.TorchPrior(prior, dev) if prior is not None else None
        self._gate = gate_mod.TorchGate(gate, dev) if gate is not None else None
        self._identity = torch.tensor(colour_prior.IDENTITY, dtype=torch.float32).reshape(1, 12, 1, 1).to(dev)
        # Settings on the device: the step reads them without a host round trip.
        self.per_frame_momentum = torch.zeros((), device=dev)  # exp(-1 / (fps * smoothing)): one frame's
        self.strength = torch.ones((), device=dev)
        h, w = net_shape
        factor = model.config.affine_factor
        self._apply_constants(frame_shape, net_shape, (h // factor, w // factor), model.config.keep_detail)
        self.state = {"stats": torch.zeros(1, int(model.stats_size), device=dev),
                      "detail_gain": torch.ones((), device=dev),
                      "unsharpen": torch.zeros((), device=dev),  # the smoothed share of a sharpening to undo
                      "coefficients": torch.zeros(1, 12, h // factor, w // factor, device=dev),
                      "scene": torch.zeros(1, 3, h, w, device=dev),
                      "background": torch.zeros(h, w, dtype=torch.bool, device=dev),
                      "frames": torch.zeros((), device=dev),  # frames since the last estimate
                      **{f"has_{k}": torch.zeros((), dtype=torch.bool, device=dev) for k in ("stats", "params", "scene")}}

    def _apply_constants(self, frame_shape, net_shape, grid_shape, keep_detail: float) -> None:
        """What Harmonizer.apply derives from the sizes, made once: the blocks the person is re-coloured at
        (engine.recolour: keep_detail's scale, or the fast apply's) and the grid's weights at their centres;
        with keep_detail, the network picture's resize to the scale the texture's gain is measured at."""
        dev = self.device
        self.keep_detail = keep_detail > 0
        self.scale = recolour.detail_scale(frame_shape, net_shape, keep_detail) or recolour.FAST_SCALE
        self._wy, self._wx = (torch.from_numpy(recolour.grid_weights(n, g, self.scale)).to(dev)
                              for n, g in zip(frame_shape, grid_shape))
        if self.keep_detail:  # Harmonizer._affine_params: contrast_gain at round(keep_detail) network pixels
            k = max(1, round(keep_detail))
            small = (max(net_shape[0] // k, 1), max(net_shape[1] // k, 1))
            self._contrast = tuple(torch.from_numpy(m).to(dev) for m in resize_matrices(net_shape, small))

    def set_smoothing(self, smoothing: float, fps: float) -> None:
        """The time constant in seconds at `fps` frames a second (a kernel with the value as argument)."""
        self.per_frame_momentum.fill_(math.exp(-1.0 / (fps * smoothing)) if smoothing > 0 else 0.0)

    def reset(self) -> None:
        """Forget the temporal state (the next frame runs with momentum 0), as Harmonizer.reset."""
        for k in ("has_stats", "has_params", "has_scene"):
            self.state[k].fill_(False)

    def step(self, image, background, mask_f, harmonize: bool):
        """(1, 3, H, W) 0..255, RGB: the composite of `image` (the person's own colours) over `background`
        (both (1, 3, H, W) uint8 values in self.dtype) through mask_f (H, W) float32 in [0, 1], harmonized
        when `harmonize`."""
        mask = mask_f.to(self.dtype)[None, None]
        # vcam.composite's blend, rounded to uint8 (integers are exact in fp16).
        composite = blend_linear_torch(image, background, mask)
        self.state["frames"].add_(1)  # time passes with harmonization off too (the momentum follows it)
        if not harmonize:
            return composite
        coefficients, gain, unsharpen, use = self._estimate(composite, mask, mask_f.amax() >= NO_PERSON)
        source = image.float()
        if self.sharpness:  # Harmonizer.apply: the person's own pixels un-sharpened before the transform
            undo = (unsharpen > 0.01) & (mask_f[None, None] > 0)
            source = torch.where(undo, sharpness_mod.unsharpen_torch(source, unsharpen, self._sharpness), source)
        person = self._apply(coefficients, gain, source, background.float(), mask_f[None, None])
        # Harmonizer.apply returns the composite without a correction or at strength 0.
        return torch.where(use & (self.strength > 0), person.to(composite.dtype), composite)

    def _apply(self, coefficients, gain, image, background, mask):
        """engine.recolour.apply_person on the whole frame, in float32 (fp16 would move its sums by ~0.1
        level): the person's colours re-coloured, mixed with them by the strength, composited again."""
        if self.keep_detail:
            matrix = gain * torch.eye(3, device=self.device)
        else:  # recolour.gain_matrix: the grid's mean transform
            matrix = coefficients[0, :9].mean(dim=(1, 2)).reshape(3, 3).T
        person = recolour.affine_corrected_fast_torch(coefficients, image, self.scale, matrix, self._wy, self._wx)
        person = torch.round(image * (1 - self.strength) + person * self.strength)  # cv2.addWeighted; exact at 1
        return person_over_torch(person, background, mask)

    def _estimate(self, composite, mask, person):
        """Harmonizer.estimate: (smoothed coefficients (1, 12, h/f, w/f) fp32, the kept texture's smoothed
        gain, the share of a sharpening to undo, whether to apply them).

        The state moves exactly where the Harmonizer's does: not without a person or a reference (the
        Harmonizer returns before touching it); a scene change forgets the statistics and the correction;
        a non-finite result is dropped."""
        low = network_resize_torch(torch.cat([composite, mask], dim=1), self._ry, self._rx_t, uint8_planes=3)
        comp_low, mask_low = low[:, :3] * (1 / 255), low[:, 3:].clamp(0, 1)
        ref_low = 1 - mask_low if self._reference_low is None else self._reference_low
        active = person & (ref_low.mean() >= NO_REFERENCE)
        s = self.state
        changed, background = scene.scene_changed_torch(s["scene"], s["background"], comp_low, ref_low, SCENE_CHANGE)
        change = s["has_scene"] & changed
        had_stats, had_params = s["has_stats"] & ~change, s["has_params"] & ~change
        # Harmonizer.momentum: exp(-dt / smoothing) for the time since the last estimate.
        momentum = self.per_frame_momentum ** s["frames"] * had_stats.float()
        output, gain, amount, stats_out = self._network(comp_low, mask_low, ref_low, momentum)
        m = momentum * had_params.float()  # corrections.blend_params: the previous correction only with momentum
        blended, blended_gain = ema(s["coefficients"], output, m), ema(s["detail_gain"], gain, m)
        stats_ok, params_ok = torch.isfinite(stats_out).all(), torch.isfinite(blended).all()
        s["stats"].copy_(torch.where(active & stats_ok, stats_out, s["stats"]))
        s["has_stats"].copy_(torch.where(active, stats_ok, s["has_stats"]))
        s["coefficients"].copy_(torch.where(active & params_ok, blended, s["coefficients"]))
        s["detail_gain"].copy_(torch.where(active & params_ok, blended_gain, s["detail_gain"]))
        s["has_params"].copy_(torch.where(active, params_ok, s["has_params"]))
        s["scene"].copy_(torch.where(active, comp_low, s["scene"]))
        s["background"].copy_(torch.where(active, background, s["background"]))
        s["has_scene"].copy_(s["has_scene"] | active)
        s["frames"].copy_(torch.where(active, 0.0, s["frames"]))
        use = active & params_ok
        return blended, blended_gain, self._unsharpen_share(composite, mask, momentum, amount, use), use

    def _unsharpen_share(self, composite, mask, momentum, amount, update):
        """Harmonizer._unsharpen_share: the detector's share on this frame, averaged with the statistics'
        momentum where the state moves (`update`), scaled by the gate's amount; 0 with sharpness off."""
        if not self.sharpness:
            return torch.zeros((), device=self.device)
        found = sharpness_mod.sharpness_features_torch(composite.float(), mask.float(), self._sharpness)
        share = ema(self.state["unsharpen"], sharpness_mod.undo_share_torch(*found, self._sharpness), momentum)
        self.state["unsharpen"].copy_(torch.where(update, share, self.state["unsharpen"]))
        return amount.clamp(max=1.0) * self.state["unsharpen"]

    def _network(self, comp_low, mask_low, ref_low, momentum):
        """The network's correction as the Harmonizer makes it: the prior's re-colouring first, the chosen
        region's light, the prior's transform composed, the kept texture's gain, the gate; (coefficients,
        gain, the gate's amount, the new statistics), fp32."""
        mdt = self._model_dtype
        net_in, prior_matrix, features = comp_low, None, None
        chosen = None if self._reference_low is None else ref_low
        if self._prior is not None:
            features = self._prior.features(comp_low, mask_low, chosen)
            prior_matrix = self._prior.matrix(comp_low, mask_low, chosen, features)
            net_in = colour_prior.recolour_torch(comp_low, mask_low, prior_matrix)
        output, stats_out = self._model(net_in.to(mdt), mask_low.to(mdt), ref_low.to(mdt),
                                        self.state["stats"].to(mdt), momentum.reshape(1).to(mdt))
        output, stats_out = output.float(), stats_out.float()
        if chosen is not None:
            gain = reference_light_gain_torch(comp_low, mask_low, ref_low, REFERENCE_ADAPTATION)
            output = scale_grid_outputs_torch(output, gain)
        if prior_matrix is not None:
            output = colour_prior.compose_torch(prior_matrix, output)
        gain, amount = torch.ones((), device=self.device), torch.ones((), device=self.device)
        if self.keep_detail:  # the kept texture follows the transforms' stretch of the contrast
            gain = recolour.contrast_gain_torch(output, comp_low, mask_low, *self._contrast)
        if self._gate is not None:
            output, amount = self._gated(output, comp_low, mask_low, chosen, features)
            gain = amount * gain + (1 - amount)
        return output, gain, amount, stats_out

    def _gated(self, coefficients, comp_low, mask_low, chosen, features):
        """Harmonizer._gated: (the coefficients moved towards the identity by the gate's amount, the amount),
        judged on the person as the whole correction leaves them at network size."""
        if features is None:
            features = colour_prior.colour_features_torch(comp_low, mask_low, chosen, self._gate.constants)
        c = upsample_grid_torch(coefficients, tuple(comp_low.shape[-2:]))
        corrected = transform_torch(c, comp_low).clamp(0, 1)
        amount = self._gate.amount(features, corrected, mask_low)
        amount = torch.where(torch.isfinite(amount), amount, 1.0)
        # gate.scale_correction: amount * c + (1 - amount) * I
        return ema(coefficients, self._identity, amount), amount


__all__ = ["DeviceHarmonizer"]
