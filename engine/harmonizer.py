"""Harmonizer: the one object the app and the benchmarks use to harmonize frames.

    h = Harmonizer()                                    # shipped weights, fastest backend
    out = h.harmonize(composite, mask)                  # uint8 RGB H x W x 3 in and out
    correction = h.estimate(composite, mask)            # network at net_size (a few Hz on a CPU) ...
    out = h.apply(correction, later_composite, later_mask)  # ... applied cheaply to every camera frame

What happens to a frame:
1. Validate (engine.inputs: uint8 RGB H x W x 3; mask H x W float in [0,1] or uint8 0..255, or bool).
2. Resize to the network size keeping the aspect ratio: the longer side becomes `net_size` and the
   shorter the nearest multiple of 8 (an aspect error of at most 4 px in 256). Not a square resize, which
   stretches the person and changes what each PN patch covers, and not padding, whose pixels would enter
   the convolutions and need masking out of every statistic; a 16:9 frame is also 44 % fewer pixels.
   Frames smaller than `net_size` are not upsampled (only rounded up to a multiple of 8).
   (engine.resampling: net_shape, network_resize.)
3. Run the backend with the temporal state: the smoothed PN statistics (`stats`), momentum =
   exp(-dt / smoothing) for the time dt since the last estimate (`smoothing` is a time constant in seconds:
   the same response at 30 estimates a second on a GPU and at the few a CPU worker manages),
   except on the first frame, after `reset()` and after a scene change (engine.scene; momentum 0 there).
4. Turn the network's output into a colour correction that applies at full resolution: the "affine" head
   (the shipped weights) predicts one directly, a grid of 3x4 colour transforms (engine.affine); an
   image head's output gets a lift fitted at low resolution (engine.lifts, `lift`, default DEFAULT_LIFT).
   Average it with the previous correction at the same momentum (the correction is temporal state too)
   and return it as a `Correction`.
5. `apply` (engine.recolour): evaluate the correction at full resolution inside the person's bounding
   box, blend `composite + strength * mask * (corrected - composite)` (or, given the person's own colours,
   composite `m * T(foreground) + (1 - m) * background`), the composite's own pixels wherever mask == 0.

The GPU frame path (engine.gpu_frame, engine.device_harmonizer) runs the same steps in their torch form.

Thread use: `estimate` mutates the temporal state (call it from one thread); `apply` only reads its
arguments, so the app's main loop can apply the newest Correction while a worker runs `estimate`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from engine import colour_prior, corrections, lifts, recolour, scene
from engine import gate as gate_mod
from engine import sharpness as sharpness_mod
from engine.backends import create_backend
from engine.backends.base import host_hwc
from engine.blend import person_box
from engine.inputs import MAX_SMOOTHING, check_image, mask_float, smoothing_seconds, strength_share
from engine.resampling import net_shape, network_inputs
from engine.weights import resolve_runtime_model

log = logging.getLogger(__name__)

#: A mask whose maximum is below this has no person: the composite is returned unchanged. MediaPipe's
#: soft masks hover at a few percent on empty frames; a real person reaches ~1.
NO_PERSON = 0.05
#: A reference region (by default the background) covering less than this share of the frame leaves
#: nothing to match the person to: the composite is returned unchanged (a face filling the frame).
NO_REFERENCE = 0.01
#: How far a chosen reference region's light moves the person (engine.corrections.reference_light_gain): half-way
#: in log terms, so a region twice as red as the room makes the person sqrt(2) times redder.
REFERENCE_ADAPTATION = 0.5
#: Scene-change threshold: the mean colour (0..1 per channel, max over the channels and the 2x2 quadrants)
#: of the background both estimates share moving by more than this resets the temporal state. A new virtual
#: background moves it by 0.1-0.5; a person moving cannot move it on a static background (the pixels
#: compared are background in both frames), a camera's auto-exposure by a few hundredths.
SCENE_CHANGE = 0.1
DEFAULT_LIFT = "delta"
#: The time between estimates assumed when a timestamp goes backwards or repeats (a 30 FPS camera's frame).
MIN_INTERVAL = 1 / 30


@dataclass(frozen=True)
class Correction:
    """A colour correction estimated on one frame, applicable to that frame or a later one of the same size.

    Attributes:
        size: (height, width) of the frame it was estimated on.
        net_size: (height, width) the network ran at.
        params: the fitted lift (engine.corrections.LiftParams), or None when there was no person (identity).
        momentum: the momentum the network ran with (0 on a first frame or after a reset).
        scene_change: whether this estimate reset the temporal state.
        unsharpen: how much of a detected sharpening of the person `apply` undoes first (0..1;
            engine.sharpness).
        amount: how much of the estimated correction the harmony gate kept (engine.gate; 1 without one):
            0 = the person already fits the scene and is left as they are.
    """

    size: tuple[int, int]
    net_size: tuple[int, int]
    params: corrections.LiftParams | None
    momentum: float = 0.0
    scene_change: bool = False
    unsharpen: float = 0.0
    amount: float = 1.0


class Harmonizer:
    """Harmonize a person composited onto a background, frame after frame.

    Args:
        model: None (the shipped default weights, or the "stats" model with a warning where none ship),
            a model name (engine.phnet.MODEL_NAMES), a weights path, or an nn.Module.
        weights: a .safetensors path (its JSON beside it says which model).
        backend: "auto", "torch", "onnxruntime" or "tensorrt" (engine.backends.create_backend).
        device: "auto", "cpu", "cuda" or "cuda:N".
        precision: "fp32", "fp16" or None (fp16 on CUDA, fp32 on CPU).
        net_size: the network's longer side in pixels (a multiple of 8).
        smoothing: time constant of the temporal smoothing in seconds, in [0, MAX_SMOOTHING]; 0 = every
            frame on its own. Each estimate averages the PN statistics and the correction with the last
            ones at momentum exp(-dt / smoothing), dt = the time since the last estimate: a change of the
            light is followed to 90 % after 2.3 x smoothing, however often the network runs.
        strength: 0 returns the composite, 1 the full harmonization.
        lift: how an image head's low-resolution result is lifted to full resolution (engine.corrections.METHODS);
            unused by the "affine" head, whose colour transforms apply at any resolution as they are.
        threads: CPU threads for ONNX Runtime (None: its default). The app passes 1 so that the network
            leaves the other cores to the camera-rate frame loop.
        sharpness: undo a sharpening of the person that the background does not have, where one is detected
            (engine.sharpness; a full-resolution filter of the person's box). The app leaves it off by
            default: it costs 3-6 ms per 720p frame while it acts.
        prior: re-colour the person by the colour prior the weights were trained behind
            (PHNetConfig.colour_prior, engine.colour_prior) before the network runs, and compose the two
            transforms; False runs the network on the composite as it is (to measure what the prior adds).
        gate: act in proportion to the mismatch (engine.gate): True uses the gate fitted for the weights
            (`<weights>.gate.safetensors` beside them; none for other models), False applies every
            correction whole, or any callable from gate features to an amount (trainer.gate records
            features that way).

    Raises:
        ValueError, TypeError: invalid arguments (message names expected vs actual).
        FileNotFoundError: a weights file that does not exist.
        RuntimeError: the requested backend cannot start.
    """

    def __init__(self, model=None, weights=None, backend: str = "auto", device: str = "auto",
                 precision: str | None = None, net_size: int = 256, smoothing: float = 0.0,
                 strength: float = 1.0, lift: str = DEFAULT_LIFT, threads: int | None = None,
                 sharpness: bool = True, prior: bool = True, gate=True):
        if not isinstance(net_size, int) or isinstance(net_size, bool) or net_size < 8 or net_size % 8:
            raise ValueError(f"net_size must be a positive multiple of 8, got {net_size!r}")
        if lift not in corrections.METHODS:
            raise ValueError(f"lift must be one of {', '.join(corrections.METHODS)}, got {lift!r}")
        self.net_size = net_size
        self.lift = lift
        self.smoothing = smoothing
        self.strength = strength
        self._model, self.model_description = resolve_runtime_model(model, weights)
        self.model_name = getattr(self._model, "name", type(self._model).__name__)
        self._keep_detail = float(getattr(getattr(self._model, "config", None), "keep_detail", 0.0))
        self._prior = colour_prior.prior_for(self._model) if prior else None
        self._gate = gate_mod.gate_for(self._model) if gate is True else (gate or None)
        self._own_gate = gate is True  # the weights' own gate (the GPU frame path loads the same)
        self._backend = create_backend(backend, self._model, device, precision, threads, max_size=net_size)
        self._device = self._backend.device
        self.threads = threads  # ONNX Runtime gets it here; the app's CPU worker gives torch the same count
        self._stats = None  # the backend's kind: NumPy on the CPU, torch tensors on a CUDA device
        self._params: corrections.LiftParams | None = None  # the last (smoothed) correction
        self.sharpness = bool(sharpness)
        self._unsharpen = 0.0  # the last (smoothed) share of a detected sharpening to undo
        self._scene: tuple[tuple[int, int], tuple[np.ndarray, np.ndarray]] | None = None
        self._last_time: float | None = None  # when the last estimate's frame was taken (momentum)
        log.info("harmonizer: model %s, backend %s, net_size %d, lift %s", self.model_description,
                 self._backend.description, net_size, lift)

    # -- settings ------------------------------------------------------------------------------------------

    @property
    def smoothing(self) -> float:
        """Time constant of the temporal smoothing in seconds (0 = none); settable while streaming."""
        return self._smoothing

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        self._smoothing = smoothing_seconds(value)

    @property
    def strength(self) -> float:
        """Blend from the composite (0) to the full harmonization (1); settable while streaming."""
        return self._strength

    @strength.setter
    def strength(self, value: float) -> None:
        self._strength = strength_share(value)

    @property
    def device(self):
        """Where the network runs (cpu or cuda:N): the app runs it inline on a GPU, in a worker on a CPU."""
        return self._device

    @property
    def backend_name(self) -> str:
        """The running backend, e.g. "onnxruntime (cpu, fp32, 2 threads)"."""
        return self._backend.description

    # -- state ---------------------------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the temporal statistics: the next frame is harmonized on its own (momentum 0)."""
        self._stats = None
        self._scene = None
        self._params = None
        self._last_time = None

    def momentum(self, timestamp: float | None = None) -> float:
        """The momentum an estimate of a frame at `timestamp` (None: now) gets: exp(-dt / smoothing) for
        the time dt since the last estimate (MIN_INTERVAL where there was none or time went backwards)."""
        if self._smoothing <= 0:
            return 0.0
        now = time.monotonic() if timestamp is None else float(timestamp)
        last = getattr(self, "_last_time", None)
        dt = MIN_INTERVAL if last is None or not now > last else now - last
        return math.exp(-dt / self._smoothing)

    # -- estimate / apply ----------------------------------------------------------------------------------

    def estimate(self, composite: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None,
                 timestamp: float | None = None) -> Correction:
        """Run the network at net_size on this frame and return its colour correction.

        Updates the temporal state (smoothed statistics); resets it first on a scene change (a frame size
        change or a jump in the reference region's colour).

        Args:
            composite: H x W x 3 uint8 RGB.
            mask: H x W float in [0, 1], uint8 0..255 or bool: the person.
            reference: optional H x W mask of the background region to match (default: 1 - mask). With the
                affine head, the person also takes on the region's light relative to the whole
                background's (REFERENCE_ADAPTATION); None leaves the network's correction as it is.
            timestamp: the frame's time in seconds (e.g. its capture time, or index / fps for a file);
                None: now (time.monotonic()). The smoothing's momentum follows the time since the last
                estimate.

        Returns:
            A Correction for `apply`.

        Raises:
            TypeError, ValueError: inputs of the wrong type, dtype or shape.
            RuntimeError: the backend failed.
        """
        composite = check_image(composite)
        size = composite.shape[:2]
        mask_f = mask_float(mask, size)
        ref_f = None if reference is None else mask_float(reference, size, "reference")
        h, w = net_shape(*size, self.net_size)
        if float(mask_f.max()) < NO_PERSON:
            return Correction(size=size, net_size=(h, w), params=None)
        comp_low, mask_low, ref_low = network_inputs(composite, mask_f, ref_f, (h, w))
        if float(ref_low.mean()) < NO_REFERENCE:
            return Correction(size=size, net_size=(h, w), params=None)
        scene_change = self._track_scene(size, comp_low, ref_low)
        stateful = self._stats is not None and self._stats.shape[1] == self._backend.stats_size
        momentum = self.momentum(timestamp) if stateful else 0.0
        self._last_time = time.monotonic() if timestamp is None else float(timestamp)
        stats_in = self._stats if stateful else self._backend.zero_stats()
        features = self._colour_features(comp_low, mask_low, ref_low if ref_f is not None else None)
        net_in, prior_matrix = self._prior_input(comp_low, mask_low, features)
        output, stats_out = self._backend.run(self._tensor(net_in), self._tensor(mask_low),
                                              self._tensor(ref_low), stats_in, momentum)
        stats_out = self._backend.copy(stats_out)
        # A non-finite state is dropped (the next frame starts afresh) rather than poisoning every later one.
        self._stats = stats_out if self._backend.all_finite(stats_out) else None
        previous = self._params if momentum > 0 else None
        amount = 1.0
        if self._backend.output_names[0] == "coefficients":
            chosen = (comp_low, mask_low, ref_low) if ref_f is not None else None
            params = self._affine_params(output, prior_matrix, comp_low, mask_low, chosen)
            params, amount = self._gated(params, features, comp_low, mask_low)
        else:
            params = self._fit_lift(output, comp_low, mask_low, previous)
        params = self._params = self._smoothed(params, previous, momentum)
        # The gate's amount scales the sharpness undo too: amount 0 leaves the person's pixels untouched.
        unsharpen = min(1.0, amount) * self._unsharpen_share(composite, mask_f, momentum) if params is not None else 0.0
        return Correction(size=size, net_size=(h, w), params=params, momentum=momentum,
                          scene_change=scene_change, unsharpen=unsharpen, amount=amount)

    @staticmethod
    def _smoothed(params, previous, momentum: float):
        """This estimate's correction averaged with the last one (None where it is not finite).

        The correction is smoothed with the same momentum as the statistics: the network's output follows
        the frame's content; averaging the corrections keeps it from shimmering with every small movement
        of the person. Every correction is linear in its parameters."""
        if params is None or not np.isfinite(params.data).all():
            log.warning("correction was not finite; this frame is left as the composite")
            return None
        return corrections.blend_params(previous, params, momentum)

    def _colour_features(self, comp_low: np.ndarray, mask_low: np.ndarray, reference: np.ndarray | None):
        """The composite's colour statistics (engine.colour_prior.colour_features), computed once for the
        prior and the gate; None when neither runs."""
        if self._prior is None and self._gate is None:
            return None
        return colour_prior.colour_features(comp_low, mask_low, reference)

    def _prior_input(self, comp_low: np.ndarray, mask_low: np.ndarray, features: np.ndarray | None):
        """(the network's input, the colour prior's (4, 3) transform or None): the person re-coloured by the
        prior the network was trained behind (engine.colour_prior), or the picture as it is."""
        if self._prior is None:
            return comp_low, None
        matrix = colour_prior.IDENTITY + self._prior.change(features).reshape(4, 3)
        return colour_prior.recolour(comp_low, mask_low, matrix), matrix

    def _gated(self, params: corrections.LiftParams, features, comp_low, mask_low) -> tuple[corrections.LiftParams, float]:
        """(the correction moved towards the identity by the gate's amount, the amount); as it is without a
        gate. The gate sees the composite's statistics and the person as the whole correction leaves them."""
        if self._gate is None or features is None or not np.isfinite(params.data).all():
            return params, 1.0
        corrected = corrections.apply_lift(params, comp_low)
        amount = float(self._gate(gate_mod.gate_features(features, corrected, mask_low)))
        if not np.isfinite(amount):
            return params, 1.0
        identity = np.asarray(colour_prior.IDENTITY, np.float32).reshape(12)
        data = gate_mod.scale_correction(params.data, identity, amount)
        gain = amount * params.detail_gain + (1.0 - amount)
        return dataclasses.replace(params, data=data, detail_gain=float(gain)), amount

    def _affine_params(self, output, prior_matrix, comp_low, mask_low, chosen) -> corrections.LiftParams:
        """The affine head's grid as a correction: after the prior's transform (if any), with the kept
        texture's gain (keep_detail)."""
        params = self._coefficients(output, chosen)
        if prior_matrix is not None:  # the prior's transform first, then the network's grid
            params = dataclasses.replace(params, data=colour_prior.compose(prior_matrix, params.data))
        if self._keep_detail > 0:  # the kept texture follows the transforms' stretch of the contrast
            gain = recolour.contrast_gain(params, comp_low, mask_low, max(1, round(self._keep_detail)))
            params = dataclasses.replace(params, detail_gain=gain)
        return params

    def _unsharpen_share(self, composite: np.ndarray, mask_f: np.ndarray, momentum: float) -> float:
        """How much of a sharpening of the person to undo (engine.sharpness.undo_share of the probability
        from this frame's full-resolution band energies), averaged over time with the statistics' momentum."""
        if not self.sharpness:
            return 0.0
        found = sharpness_mod.oversharpened(sharpness_mod.sharpness_features(composite, mask_f))
        decided = sharpness_mod.undo_share(found)
        self._unsharpen = momentum * self._unsharpen + (1.0 - momentum) * decided
        return self._unsharpen

    def _tensor(self, a: np.ndarray):
        """(H, W, C) or (H, W) -> (1, C, H, W) in the backend's kind (NumPy on the CPU, torch on a GPU)."""
        return self._backend.from_host(a)

    def _track_scene(self, size, comp_low: np.ndarray, ref_low: np.ndarray) -> bool:
        """Reset the temporal state on a scene change (engine.scene, or a new frame size); returns whether
        there was one."""
        last = self._scene
        scene_change = last is not None and (last[0] != size or scene.scene_changed(last[1], comp_low, ref_low,
                                                                                      SCENE_CHANGE))
        if scene_change:
            log.info("scene change detected: temporal statistics reset")
            self._stats = None
            self._params = None
        self._scene = (size, scene.signature(comp_low, ref_low))
        return scene_change

    @staticmethod
    def _coefficients(output, chosen=None) -> corrections.LiftParams:
        """The affine head's grid (1, 12, h, w) as an "affine-grid" correction: no fitting, exact at any
        resolution (the grid is applied to the full-resolution frame).

        With a chosen reference region, `chosen` = (comp_low, mask_low, ref_low): the network matched the
        person to the scene; the difference between the region's light and the whole background's is
        added as a gain (the network itself, trained to undo re-colourings, barely follows a region;
        docs/notes/runtime.md)."""
        grid = host_hwc(output)
        if chosen is not None:
            grid = corrections.scale_grid_outputs(grid, corrections.reference_light_gain(*chosen, REFERENCE_ADAPTATION))
        return corrections.LiftParams("affine-grid", grid)

    def _fit_lift(self, output, comp_low, mask_low, previous) -> corrections.LiftParams:
        """An image head's output -> a correction fitted at network resolution (engine.lifts)."""
        harm_low = host_hwc(output)
        if not np.isfinite(harm_low).all():
            log.warning("backend returned non-finite values; replaced (frame kept as composite there)")
            harm_low = np.where(np.isfinite(harm_low), harm_low, comp_low)
        harm_low = np.clip(harm_low, 0, 1).astype(np.float32, copy=False)
        options = {}
        if self.lift == "poly" and previous is not None:
            options["centre"] = previous.centre  # a shared centre makes the fits averageable
        return lifts.fit_lift(self.lift, comp_low, harm_low, mask_low, **options)

    def apply(self, correction: Correction, composite: np.ndarray, mask: np.ndarray, *,
              foreground: np.ndarray | None = None, background: np.ndarray | None = None,
              box: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """Apply a correction at full resolution to this frame (or a later frame of the same size).

        With `foreground` and `background` (the app has both), the person's own colours are corrected and
        composited afterwards, out = m * T(foreground) + (1 - m) * background, so the soft edge gets the
        same correction as the inside; without them the correction is blended into the composite with the
        mask, composite + m * (T(composite) - composite).

        Args:
            correction: from `estimate`.
            composite: H x W x 3 uint8 RGB, the same H x W the correction was estimated on.
            mask: H x W float in [0, 1], uint8 or bool: this frame's person.
            foreground: H x W x 3 uint8 RGB, the person's colours (composite = m * foreground + (1-m) * background).
            background: H x W x 3 uint8 RGB, the backdrop the composite was made on.
            box: (y0, y1, x0, x1) with the mask 0 outside it (default: found from the mask).

        Returns:
            H x W x 3 uint8 RGB: the composite where mask == 0, the harmonized person elsewhere.

        Raises:
            TypeError, ValueError: inputs of the wrong type or shape, or a frame size that differs from
                the correction's.
        """
        if not isinstance(correction, Correction):
            raise TypeError(f"correction must be a Correction from estimate(), got {type(correction).__name__}")
        composite = check_image(composite)
        size = composite.shape[:2]
        if tuple(size) != tuple(correction.size):
            raise ValueError(f"correction was estimated on a {correction.size[0]}x{correction.size[1]} frame, "
                             f"got {size[0]}x{size[1]} (call estimate again after a size change)")
        mask_f = mask_float(mask, size)
        person = (foreground, background) if foreground is not None or background is not None else None
        if person is not None and (any(a is None for a in person) or
                                   any(check_image(a).shape != composite.shape for a in person)):
            raise ValueError("foreground and background must both be given, each H x W x 3 like the composite")
        out = composite.copy()
        if correction.params is None or self._strength == 0.0:
            return out
        box = person_box(mask_f, NO_PERSON) if box is None else box
        if box is None:
            return out
        y0, y1, x0, x1 = box
        if correction.unsharpen > 0.01:  # the person's own pixels, un-sharpened before the colour transform
            source = composite if person is None else person[0]
            source = sharpness_mod.unsharpen_person(source, mask_f, box, correction.unsharpen)
            composite, person = (source, None) if person is None else (composite, (source, person[1]))
        scale = recolour.detail_scale(size, correction.net_size, self._keep_detail)
        if person is not None and correction.params.method in ("delta", "affine-grid"):
            out[y0:y1, x0:x1] = recolour.apply_person(correction.params, *person, mask_f[y0:y1, x0:x1],
                                                      self._strength, box, scale)
            return out
        out[y0:y1, x0:x1] = recolour.apply_blend(correction.params, composite, mask_f[y0:y1, x0:x1],
                                                 self._strength, box, scale)
        return out

    def harmonize(self, composite: np.ndarray, mask: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """`apply(estimate(composite, mask, reference), composite, mask)`.

        Raises:
            TypeError, ValueError: inputs of the wrong type, dtype or shape.
            RuntimeError: the backend failed.
        """
        return self.apply(self.estimate(composite, mask, reference), composite, mask)

    def frame_path(self, size: tuple[int, int], reference: np.ndarray | None = None):
        """This harmonizer's work as a GPU frame path (engine.gpu_frame.GpuFramePath, which the app runs
        inline on CUDA) for frames of `size` = (width, height) on its device: the same weights, net_size,
        smoothing, strength, colour prior, gate and sharpness; `reference` fixed for the stream. None where the path
        cannot run this model (an image head, or a custom gate), or without torch."""
        if self._gate is not None and not self._own_gate:
            return None  # a gate passed in as a callable: the device path only runs the weights' own
        try:
            from engine.gpu_frame import GpuFramePath
        except ImportError:  # the lean runtime: no torch, no device path
            return None
        model = self._model.module() if hasattr(self._model, "module") else self._model
        if self._backend.output_names[0] != "coefficients":
            return None
        index = getattr(self._device, "index", None)  # a torch.device, or the lean runtime's own Device
        device = self._device.type if index is None else f"{self._device.type}:{index}"
        return GpuFramePath(model, size, device=device, net_size=self.net_size, smoothing=self._smoothing,
                            strength=self._strength, reference=reference, prior=self._prior is not None,
                            gate=self._gate is not None, sharpness=self.sharpness)

    def close(self) -> None:
        """Release the backend. Safe to call more than once."""
        backend = getattr(self, "_backend", None)
        if backend is not None:
            backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Harmonizer(model={self.model_description!r}, backend={self.backend_name!r}, "
                f"net_size={self.net_size}, smoothing={self._smoothing}, strength={self._strength})")


__all__ = ["DEFAULT_LIFT", "MAX_SMOOTHING", "Correction", "Harmonizer", "net_shape"]
