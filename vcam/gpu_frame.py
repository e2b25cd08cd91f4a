"""The GPU frame path: composite and harmonize one camera frame on a torch device, one upload, one download.

    path = GpuFramePath(model, (1920, 1080), background=background_rgb, device="cuda", smoothing=0.1)
    out = path.process(image_rgb, mask)           # uint8 H x W x 3, the harmonized composite
    pending = path.submit(image_rgb, mask)        # ... or overlap: the GPU works while the CPU decodes and
    out = pending.result()                        # segments the next frame; result() is the only wait

On a CPU the app harmonizes at camera rate with `engine.Harmonizer.apply` (OpenCV kernels at full
resolution) and runs the network in a worker thread. On a GPU the network is cheap enough for every frame,
and what costs is moving 1080p frames and launching small kernels. So here the whole frame's work runs on
the device: the camera picture and the mask are uploaded once (from pinned host memory), and the
composite over the background (uploaded once), the resize to the network size, the network, the affine
head's colour transforms applied at full resolution and the blend through the mask all stay on the GPU in
half precision; the output is downloaded once. On CUDA the device part is one CUDA graph (one launch
instead of hundreds of small kernels), and nothing waits for the GPU except `result()` (the download).

The maths is the CPU path's, step for step, so the two give the same picture (tests/test_gpu_frame.py
compares them on real frames): vcam.composite (blendLinear: rounded to uint8), Harmonizer.estimate (the
same INTER_AREA resize, as two matrix products with cv2's own weights, rounded to uint8 like cv2 does for
uint8 frames; the no-person check; scene changes; momentum; the correction smoothed with the statistics'
momentum; non-finite guards) and Harmonizer.apply with engine.lift.apply_affine_blend (the transforms
applied at 0..255, rounded, then blended and rounded). Every data-dependent decision is a `torch.where` on
the device rather than a Python `if` on a tensor, which would wait for the GPU and break the graph.

Only models whose first output is "coefficients" (the affine head, the shipped weights) run here: an image
head needs a lift fitted per frame (engine.lift), which `engine.Harmonizer` does.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from engine import colour_prior
from engine import gate as gate_mod
from engine.harmonizer import MAX_SMOOTHING, NO_PERSON, REFERENCE_ADAPTATION, SCENE_CHANGE, net_shape
from engine.lift import REFERENCE_GAIN_LIMITS

PRECISIONS = ("fp32", "fp16", "bf16")
CHANNELS = ("rgb", "bgr")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resize_matrices(size: tuple[int, int], net: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(Ry (h, H), Rx^T (W, w)) float32 with ``Ry @ image @ Rx^T == cv2.resize(image, (w, h))``.

    The interpolation is the Harmonizer's (INTER_AREA when shrinking both sides, else INTER_LINEAR), and
    the weights are cv2's own: each matrix is cv2.resize applied to an identity along one axis. A resize
    as two matrix products runs on the GPU's tensor cores and equals the CPU path to float rounding.

    Args:
        size: (H, W) of the frame.
        net: (h, w) of the network input.
    """
    (height, width), (h, w) = size, net
    interp = cv2.INTER_AREA if h <= height and w <= width else cv2.INTER_LINEAR
    ry = cv2.resize(np.eye(height, dtype=np.float32), (height, h), interpolation=interp)
    rx_t = cv2.resize(np.eye(width, dtype=np.float32), (w, width), interpolation=interp)
    return np.ascontiguousarray(ry), np.ascontiguousarray(rx_t)


def blend_linear(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """cv2.blendLinear(a, b, weight, 1 - weight) before its rounding: it divides by the weights' sum + 1e-5,
    which moves exact .5 ties down (0.3 % of pixels in a random test would round the other way)."""
    inverse = 1 - weight
    return (a * weight + b * inverse) / (weight + inverse + 1e-5)


def _quadrants(h: int, w: int) -> tuple[tuple[slice, slice], ...]:
    """The 2x2 quadrants of Harmonizer._scene_signature (with its `or 1` for 1-pixel sides)."""
    top, left = slice(0, h // 2 or 1), slice(0, w // 2 or 1)
    bottom, right = slice(h // 2, h), slice(w // 2, w)
    return ((top, left), (top, right), (bottom, left), (bottom, right))


@dataclass
class PendingFrame:
    """A submitted frame: `result()` waits for its download and returns the output.

    The returned array is the path's pinned buffer for this slot: it stays valid until `depth` more
    frames are submitted (copy it to keep it longer).
    """

    _path: GpuFramePath
    _slot: int
    _done: object = None  # a torch.cuda.Event on CUDA, None on a CPU (already computed)
    _events: tuple = ()
    timings: dict[str, float] = field(default_factory=dict)

    def result(self) -> np.ndarray:
        if self._done is not None:
            self._done.synchronize()  # the one wait: the download of this frame
            if self._events:
                start, uploaded, computed, downloaded = self._events
                self.timings.update(upload_ms=start.elapsed_time(uploaded),
                                    gpu_ms=uploaded.elapsed_time(computed),
                                    download_ms=computed.elapsed_time(downloaded))
        return self._path._host_out[self._slot]


def _check_arguments(model, size, device, precision, net_size: int, channels: str, depth: int):
    """(width, height, precision) after checking GpuFramePath's arguments (see its docstring)."""
    from engine.phnet import output_names

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if output_names(model)[0] != "coefficients":
        raise ValueError(f"the GPU frame path needs an affine-head model (first output 'coefficients'), "
                         f"got {output_names(model)[0]!r}: use engine.Harmonizer for image heads")
    width, height = (int(v) for v in size)
    if width < 8 or height < 8:
        raise ValueError(f"size must be (width, height) of at least 8 x 8, got {size}")
    if not isinstance(net_size, int) or net_size < 8 or net_size % 8:
        raise ValueError(f"net_size must be a positive multiple of 8, got {net_size!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS}, got {channels!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive int, got {depth!r}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but torch.cuda.is_available() is False")
    if device.type not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
    cuda = device.type == "cuda"
    precision = precision or ("fp16" if cuda else "fp32")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} or None, got {precision!r}")
    if precision != "fp32" and not cuda:
        raise ValueError(f"precision {precision!r} needs a CUDA device; use 'fp32' on a CPU")
    return width, height, precision


def _with_reference_light(coefficients: torch.Tensor, comp_low: torch.Tensor, mask_low: torch.Tensor,
                          ref_low: torch.Tensor, eps: float = 1 / 255) -> torch.Tensor:
    """engine.lift.reference_light_gain folded into the grid (scale_grid_outputs), on the device and without
    a branch on a tensor's value (CUDA graphs)."""
    room = (mask_low < 0.5).float()
    weights = torch.cat([ref_low * room, room], dim=0)  # (2, 1, h, w)
    totals = weights.sum(dim=(1, 2, 3))
    means = (comp_low * weights).sum(dim=(2, 3)) / totals.clamp_min(1e-12)[:, None]  # (2, 3)
    gain = ((means[0] + eps) / (means[1] + eps)) ** REFERENCE_ADAPTATION
    gain = torch.where(totals.min() < 1e-6, torch.ones_like(gain), gain.clamp(*REFERENCE_GAIN_LIMITS))
    b, _, h, w = coefficients.shape
    return (coefficients.view(b, 4, 3, h, w) * gain.view(1, 1, 3, 1, 1)).view(b, 12, h, w)


def _checked_fps(fps: float) -> float:
    """The camera's frame rate the smoothing assumes.

    Raises:
        ValueError: outside (0, 1000].
    """
    if not 0 < float(fps) <= 1000:
        raise ValueError(f"fps must be in (0, 1000], got {fps}")
    return float(fps)


class GpuFramePath:
    """Composite + harmonize frames of one size on one torch device (CUDA in half precision, or a CPU).

    Args:
        model: an nn.Module whose first output is "coefficients" (engine.phnet with output="affine").
        size: (width, height) of the frames.
        background: the virtual background, uint8 (height, width, 3) in `channels` order; None: black.
            `set_background` changes it; `submit(..., background=)` passes one per frame (video, blur).
        device: "cuda", "cuda:N" or "cpu".
        precision: the network's "fp32", "fp16" or "bf16"; None: fp16 on CUDA, fp32 on a CPU. The image
            maths runs in fp16 on CUDA unless precision is fp32 (0..255 integers are exact in fp16).
        net_size: the network's longer side (engine.harmonizer.net_shape).
        smoothing: time constant of the temporal smoothing in seconds, as the Harmonizer's; the path runs
            on every frame, so each frame's momentum is exp(-1 / (fps * smoothing)).
        fps: the camera's frame rate (the time between two frames the smoothing assumes).
        strength: 0 = the composite, 1 = the full harmonization.
        reference: optional float32 (height, width) mask of the background region the person is matched
            to (fixed for the stream); None: 1 - mask.
        channels: "rgb" or "bgr": the order of image, background and output (bgr saves OpenCV's two
            colour conversions per frame: the swap is free on the GPU).
        cuda_graph: capture the device work as one CUDA graph (CUDA only).
        depth: frames in flight (pinned buffer slots) for `submit`.
        prior: re-colour the person by the colour prior the weights name before the network runs, and
            compose the transforms, as engine.Harmonizer does (False: as Harmonizer(prior=False)).
        gate: scale the correction by the harmony gate fitted for the weights (engine.gate), as
            engine.Harmonizer does (False: as Harmonizer(gate=False)).

    Raises:
        TypeError, ValueError: an unusable model or argument (names expected vs actual).
        RuntimeError: CUDA asked for and not available.
    """

    def __init__(self, model: torch.nn.Module, size: tuple[int, int], *, background: np.ndarray | None = None,
                 device: str | torch.device = "cuda", precision: str | None = None, net_size: int = 256,
                 smoothing: float = 0.0, strength: float = 1.0, reference: np.ndarray | None = None,
                 channels: str = "rgb", cuda_graph: bool = True, depth: int = 2, prior: bool = True,
                 fps: float = 30.0, gate: bool = True):
        width, height, precision = _check_arguments(model, size, device, precision, net_size, channels, depth)
        if getattr(model.config, "keep_detail", 0.0) > 0:
            # Not on the device path yet: it applies the transforms to every pixel, as keep_detail 0 does
            # (engine.Harmonizer keeps the finer texture instead). Said once, where the path is built.
            logging.getLogger(__name__).warning(
                "the GPU frame path does not apply keep_detail=%s yet: the person's finest texture follows "
                "the model's transforms", model.config.keep_detail)
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.size, self.frame_shape = (width, height), (height, width)
        self._stream = None  # made below on CUDA; setters used before then run on the default stream
        self.net_shape = net_shape(height, width, net_size)
        self.precision, self.channels, self.depth = precision, channels, depth
        self._model_dtype = _DTYPES[precision]
        self._dtype = torch.float32 if precision == "fp32" else torch.float16
        self._model = copy.deepcopy(model).eval().to(device=self.device, dtype=self._model_dtype)
        for p in self._model.parameters():
            p.requires_grad_(False)
        self.stats_size = int(self._model.stats_size)
        self._load_colour_models(model, prior, gate)
        self.harmonizing = True  # False: the composite alone (no network), e.g. the harmonize hotkey
        dev, dt = self.device, self._dtype
        ry, rx_t = resize_matrices(self.frame_shape, self.net_shape)
        self._ry = torch.from_numpy(ry).to(dev, dt)
        self._rx_t = torch.from_numpy(rx_t).to(dev, dt)
        # Device inputs and output: fixed buffers, so a CUDA graph can read and write them every frame.
        self._image = torch.zeros(height, width, 3, dtype=torch.uint8, device=dev)
        self._background = torch.zeros(height, width, 3, dtype=torch.uint8, device=dev)
        self._mask = {torch.uint8: torch.zeros(height, width, dtype=torch.uint8, device=dev),
                      torch.float32: torch.zeros(height, width, dtype=torch.float32, device=dev)}
        self._mask_is_u8 = torch.zeros((), dtype=torch.bool, device=dev)
        self._out = torch.zeros(height, width, 3, dtype=torch.uint8, device=dev)
        self._reference_low = None
        if reference is not None:
            ref = np.asarray(reference, np.float32)
            if ref.shape != self.frame_shape:
                raise ValueError(f"reference must be {self.frame_shape} like the frames, got {ref.shape}")
            ref_t = torch.from_numpy(np.clip(ref, 0, 1)).to(dev, torch.float32)
            self._reference_low = (torch.from_numpy(ry).to(dev) @ ref_t @ torch.from_numpy(rx_t).to(dev)).clamp(0, 1)
        self._allocate_state(dev)
        self.fps = _checked_fps(fps)
        self.smoothing, self.strength = smoothing, strength
        if background is not None:
            self.set_background(background)
        self._allocate_host(height, width, depth, cuda)
        self.cuda_graph = self._cuda_graph = cuda and cuda_graph
        self._graphs: dict[bool, torch.cuda.CUDAGraph] = {}  # one per harmonize setting, made on first use
        if cuda:
            # Everything above ran on the default stream; the frames run on their own stream (the app's
            # other GPU work does not queue behind them). Set-up time: one wait, never per frame.
            torch.cuda.synchronize(dev)
            self._stream = torch.cuda.Stream(dev)
        if self._cuda_graph:
            self._capture(self.harmonizing)

    def _load_colour_models(self, model, prior: bool, gate: bool) -> None:
        """The colour prior the weights were trained behind and the gate fitted for them (engine.colour_prior,
        engine.gate), in fp32 on the device, as engine.Harmonizer loads them."""
        prior = colour_prior.prior_for(model) if prior else None
        self._prior = colour_prior.TorchPrior(prior, self.device) if prior is not None else None
        gate = gate_mod.gate_for(model) if gate else None
        self._gate = gate_mod.TorchGate(gate, self.device) if gate is not None else None
        self._identity = torch.tensor(colour_prior.IDENTITY, dtype=torch.float32).reshape(1, 12, 1, 1).to(self.device)

    def _allocate_host(self, height: int, width: int, depth: int, cuda: bool) -> None:
        # Host side: pinned slots on CUDA (asynchronous copies need page-locked memory).
        self._host_in = [torch.zeros(height, width, 3, dtype=torch.uint8, pin_memory=cuda) for _ in range(depth)]
        self._host_mask: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self._host_out_t = [torch.zeros(height, width, 3, dtype=torch.uint8, pin_memory=cuda) for _ in range(depth)]
        self._host_out = [t.numpy() for t in self._host_out_t]
        self._uploaded = [None] * depth  # CUDA events: the slot's host buffers may be overwritten after these
        self._next = 0

    def _allocate_state(self, dev: torch.device) -> None:
        # Settings and temporal state live on the device: the step reads them without a host round trip.
        self._smoothing = torch.zeros((), device=dev)
        self._strength = torch.ones((), device=dev)
        h, w = self.net_shape
        self._quadrant_area = torch.tensor([0.05 * len(range(h)[ys]) * len(range(w)[xs])
                                            for ys, xs in _quadrants(h, w)], device=dev)
        factor = self._model.config.affine_factor
        self._stats = torch.zeros(1, self.stats_size, device=dev)
        self._coefficients = torch.zeros(1, 12, h // factor, w // factor, device=dev)
        self._scene = torch.zeros(4, 3, device=dev)
        self._scene_valid = torch.zeros(4, dtype=torch.bool, device=dev)
        self._has = {k: torch.zeros((), dtype=torch.bool, device=dev) for k in ("stats", "params", "scene")}

    # -- settings ---------------------------------------------------------------------------------------

    @property
    def smoothing(self) -> float:
        return self._smoothing_value

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= MAX_SMOOTHING:
            raise ValueError(f"smoothing must be a time constant in seconds in [0, {MAX_SMOOTHING:g}], got {value}")
        self._smoothing_value = value
        momentum = math.exp(-1.0 / (self.fps * value)) if value > 0 else 0.0  # one frame's, as the Harmonizer's
        with self._ordered():
            self._smoothing.fill_(momentum)  # a kernel with the value as argument: no wait for the GPU

    @property
    def strength(self) -> float:
        return self._strength_value

    @strength.setter
    def strength(self, value: float) -> None:
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {value}")
        self._strength_value = value
        with self._ordered():
            self._strength.fill_(value)

    def _ordered(self):
        """Writes to the device state go on the frames' stream, so they land between two frames."""
        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    def set_background(self, background: np.ndarray) -> None:
        """Upload a new virtual background (a new scene: the temporal state is reset).

        Raises:
            TypeError, ValueError: not a uint8 (height, width, 3) array.
        """
        self._check_image(background, "background")
        with self._ordered():
            self._background.copy_(torch.from_numpy(np.ascontiguousarray(background)))
        self.reset()

    def reset(self) -> None:
        """Forget the temporal state (the next frame runs with momentum 0), as Harmonizer.reset."""
        with self._ordered():
            for flag in self._has.values():
                flag.fill_(False)

    # -- per frame ----------------------------------------------------------------------------------------

    def _check_image(self, image, name: str) -> None:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
            raise TypeError(f"{name} must be a uint8 numpy array, got "
                            f"{getattr(image, 'dtype', type(image).__name__)}")
        if image.shape != (*self.frame_shape, 3):
            raise ValueError(f"{name} must be {(*self.frame_shape, 3)} (height, width, 3), got {image.shape}")

    def _mask_array(self, mask) -> np.ndarray:
        if not isinstance(mask, np.ndarray):
            raise TypeError(f"mask must be a numpy array (uint8 or float32 in [0,1]), got {type(mask).__name__}")
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        if mask.shape != self.frame_shape:
            raise ValueError(f"mask must be {self.frame_shape} (height, width), got {mask.shape}")
        if mask.dtype == np.bool_:
            return mask.astype(np.uint8) * np.uint8(255)
        if mask.dtype in (np.float16, np.float64):
            return mask.astype(np.float32)
        if mask.dtype not in (np.uint8, np.float32):
            raise TypeError(f"mask must be uint8 0..255, float in [0, 1] or bool, got dtype {mask.dtype}")
        return mask

    def submit(self, image: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None,
               timing: bool = False) -> PendingFrame:
        """Start one frame; returns at once on CUDA (the GPU works while the caller does other things).

        Args:
            image: uint8 (height, width, 3) camera picture in `channels` order.
            mask: (height, width) person mask: uint8 0..255, float32 in [0, 1] or bool.
            background: this frame's background (a video or blurred background); None: the current one.
            timing: record CUDA events for upload / GPU / download times (`PendingFrame.timings`).

        Raises:
            TypeError, ValueError: inputs of the wrong type or shape.
        """
        self._check_image(image, "image")
        mask = self._mask_array(mask)
        if background is not None:
            self._check_image(background, "background")
        slot = self._next
        self._next = (slot + 1) % self.depth
        if self._stream is None:
            return self._run_here(slot, image, mask, background)
        host_in, host_mask = self._stage(slot, image, mask)
        if self._cuda_graph and self.harmonizing not in self._graphs:
            self._capture(self.harmonizing)  # the first frame after the harmonize setting changed
        events = tuple(torch.cuda.Event(enable_timing=True) for _ in range(4)) if timing else ()
        done = torch.cuda.Event()
        with torch.cuda.stream(self._stream):
            if events:
                events[0].record()
            self._image.copy_(host_in, non_blocking=True)
            self._select_mask(host_mask)
            if background is not None:  # pageable memory: a synchronous copy, only for per-frame backgrounds
                self._background.copy_(torch.from_numpy(background))
            uploaded = torch.cuda.Event()
            uploaded.record()
            self._uploaded[slot] = uploaded
            if events:
                events[1].record()
            if self._cuda_graph:
                self._graphs[self.harmonizing].replay()
            else:
                with torch.inference_mode():
                    self._step(self.harmonizing)
            if events:
                events[2].record()
            self._host_out_t[slot].copy_(self._out, non_blocking=True)
            if events:
                events[3].record()
            done.record()
        return PendingFrame(self, slot, done, events)

    def _run_here(self, slot: int, image, mask, background) -> PendingFrame:
        """The frame on a device without streams (the CPU): synchronous, the same step."""
        with torch.inference_mode():
            self._image.copy_(torch.from_numpy(image))
            self._select_mask(torch.from_numpy(mask))
            if background is not None:
                self._background.copy_(torch.from_numpy(background))
            self._step(self.harmonizing)
        np.copyto(self._host_out[slot], self._out.numpy())
        return PendingFrame(self, slot)

    def _stage(self, slot: int, image, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Copy the frame and mask into the slot's pinned host buffers (once the slot's last upload is done)."""
        if self._uploaded[slot] is not None:
            self._uploaded[slot].synchronize()  # this slot's last upload, long finished in a steady stream
        host_in = self._host_in[slot]
        np.copyto(host_in.numpy(), image)
        key = (slot, torch.from_numpy(mask[:1, :1]).dtype)
        if key not in self._host_mask:
            self._host_mask[key] = torch.zeros(self.frame_shape, dtype=key[1], pin_memory=True)
        host_mask = self._host_mask[key]
        np.copyto(host_mask.numpy(), mask)
        return host_in, host_mask

    def _select_mask(self, mask: torch.Tensor) -> None:
        # Both dtypes have a fixed device buffer (the graph reads both); a flag on the device says which.
        is_u8 = mask.dtype == torch.uint8
        self._mask[torch.uint8 if is_u8 else torch.float32].copy_(mask, non_blocking=True)
        self._mask_is_u8.fill_(is_u8)

    def process(self, image: np.ndarray, mask: np.ndarray, background: np.ndarray | None = None) -> np.ndarray:
        """`submit(...).result()`: the output (uint8 (height, width, 3), `channels` order).

        Raises:
            TypeError, ValueError: inputs of the wrong type or shape.
        """
        return self.submit(image, mask, background).result()

    # -- the device work (one CUDA graph) -----------------------------------------------------------------

    def _capture(self, harmonize: bool) -> None:
        """Warm up (cuDNN/cuBLAS pick their kernels), then record `_step` as one CUDA graph.

        Set-up time, not per frame: it waits for the GPU and the warm-up runs move the temporal state,
        which is therefore saved around it."""
        with torch.cuda.stream(self._stream), torch.inference_mode():
            saved = {k: v.clone() for k, v in self._has.items()}
            for _ in range(3):
                self._step(harmonize)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, stream=self._stream):
            self._step(harmonize)
        self._graphs[harmonize] = graph
        with torch.cuda.stream(self._stream):
            for k, v in saved.items():
                self._has[k].copy_(v)
        self._stream.synchronize()

    def _step(self, harmonize: bool) -> None:
        """One frame from the device input buffers to `self._out`; every branch is a torch.where."""
        dt = self._dtype
        chw = [2, 1, 0] if self.channels == "bgr" else [0, 1, 2]  # RGB order for the network
        image = self._image.permute(2, 0, 1)[chw].unsqueeze(0).to(dt)  # (1, 3, H, W) 0..255
        background = self._background.permute(2, 0, 1)[chw].unsqueeze(0).to(dt)
        mask_f = torch.where(self._mask_is_u8, self._mask[torch.uint8].float() * (1 / 255),
                             torch.nan_to_num(self._mask[torch.float32].clamp(0, 1), nan=0.0))
        mask = mask_f.to(dt)[None, None]  # (1, 1, H, W)
        # vcam.composite: blendLinear's weighted sum, rounded to uint8 (integers are exact in fp16).
        composite = torch.round(blend_linear(image, background, mask)).clamp(0, 255)
        out = composite
        if harmonize:
            out = self._harmonize(composite, mask, mask_f.amax() >= NO_PERSON)
        self._out.copy_(out[0][chw].permute(1, 2, 0).to(torch.uint8))

    def _harmonize(self, composite: torch.Tensor, mask: torch.Tensor, person: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) 0..255: the harmonized composite (the composite itself where there is no person)."""
        dt = self._dtype
        coefficients, use = self._estimate(composite, mask, person)
        # Harmonizer.apply + lift.apply_affine_blend at 0..255: transforms (bilinear, half-pixel centres)
        # applied and rounded to uint8, then blended by mask x strength and rounded again.
        c = F.interpolate(coefficients.to(dt), size=self.frame_shape, mode="bilinear", align_corners=False)
        corrected = (c[:, 0:3] * composite[:, 0:1] + c[:, 3:6] * composite[:, 1:2] + c[:, 6:9] * composite[:, 2:3]
                     + c[:, 9:12] * 255)
        corrected = torch.round(corrected.clamp(0, 255))
        weight = mask * torch.where(use, self._strength, 0.0).to(dt)
        return torch.round(blend_linear(corrected, composite, weight))

    def _estimate(self, composite: torch.Tensor, mask: torch.Tensor, person: torch.Tensor):
        """Harmonizer.estimate on the device: (smoothed coefficients (1, 12, h/f, w/f) fp32, whether to apply).

        The state changes exactly where the Harmonizer's does: nothing without a person; a scene change
        forgets the statistics and the correction; a non-finite result is dropped.
        """
        planes = torch.cat([composite, mask], dim=1)  # one resize for the four planes
        low = (self._ry @ planes @ self._rx_t).float()  # (1, 4, h, w)
        # cv2 rounds a uint8 frame's resize to uint8: the network sees what the CPU path gives it.
        comp_low = torch.round(low[:, :3]).clamp(0, 255) * (1 / 255)
        mask_low = low[:, 3:].clamp(0, 1)
        ref_low = 1 - mask_low if self._reference_low is None else self._reference_low[None, None]
        has = self._has
        change, signature, valid = self._scene_change(comp_low, ref_low)
        had_stats = has["stats"] & ~change
        had_params = has["params"] & ~change
        momentum = self._smoothing * had_stats.float()
        mdt = self._model_dtype
        net_in, prior_matrix, features = comp_low, None, None
        chosen = None if self._reference_low is None else ref_low
        if self._prior is not None:  # Harmonizer.estimate: the prior's re-colouring first
            features = self._prior.features(comp_low, mask_low, chosen)
            prior_matrix = self._prior.matrix(comp_low, mask_low, chosen, features)
            net_in = colour_prior.recolour_torch(comp_low, mask_low, prior_matrix)
        output, stats_out = self._model(net_in.to(mdt), mask_low.to(mdt), ref_low.to(mdt),
                                        self._stats.to(mdt), momentum.reshape(1).to(mdt))
        output, stats_out = output.float(), stats_out.float()
        if self._reference_low is not None:
            output = _with_reference_light(output, comp_low, mask_low, ref_low)
        if prior_matrix is not None:
            output = colour_prior.compose_torch(prior_matrix, output)
        if self._gate is not None:
            output = self._gated(output, comp_low, mask_low, chosen, features)
        stats_ok = torch.isfinite(stats_out).all()
        m = momentum * had_params.float()  # lift.blend_params: the previous correction only with momentum
        blended = m * self._coefficients + (1 - m) * output
        params_ok = torch.isfinite(blended).all()
        # The state moves only on frames with a person (the Harmonizer returns before touching it).
        self._stats.copy_(torch.where(person & stats_ok, stats_out, self._stats))
        has["stats"].copy_(torch.where(person, stats_ok, has["stats"]))
        self._coefficients.copy_(torch.where(person & params_ok, blended, self._coefficients))
        has["params"].copy_(torch.where(person, params_ok, has["params"]))
        self._scene.copy_(torch.where(person, signature, self._scene))
        self._scene_valid.copy_(torch.where(person, valid, self._scene_valid))
        has["scene"].copy_(has["scene"] | person)
        use = person & params_ok
        return torch.where(use, blended, self._coefficients), use

    def _gated(self, coefficients, comp_low, mask_low, chosen, features):
        """Harmonizer._gated on the device: the coefficients moved towards the identity by the gate's
        amount, judged on the person as the whole correction leaves them at network size."""
        if features is None:
            features = colour_prior.colour_features_torch(comp_low, mask_low, chosen, self._gate.constants)
        c = F.interpolate(coefficients, size=comp_low.shape[-2:], mode="bilinear", align_corners=False)
        corrected = (c[:, 0:3] * comp_low[:, 0:1] + c[:, 3:6] * comp_low[:, 1:2] + c[:, 6:9] * comp_low[:, 2:3]
                     + c[:, 9:12]).clamp(0, 1)
        amount = self._gate.amount(features, corrected, mask_low)
        amount = torch.where(torch.isfinite(amount), amount, 1.0)
        return amount * coefficients + (1 - amount) * self._identity

    def _scene_change(self, comp_low: torch.Tensor, ref_low: torch.Tensor):
        """Harmonizer._scene_signature / _is_scene_change: (changed, signature (4, 3), valid (4,))."""
        h, w = self.net_shape
        sums, totals = [], []
        for ys, xs in _quadrants(h, w):
            weight = ref_low[0, 0, ys, xs]
            sums.append((comp_low[0, :, ys, xs] * weight).sum(dim=(1, 2)))
            totals.append(weight.sum())
        totals = torch.stack(totals)
        valid = totals > self._quadrant_area  # too little reference in a quadrant to judge it
        signature = torch.stack(sums) / torch.where(valid, totals, 1.0)[:, None]
        both = valid & self._scene_valid
        diff = torch.where(both[:, None], (signature - self._scene).abs(), 0.0).amax()
        return self._has["scene"] & (diff > SCENE_CHANGE), signature, valid

    def close(self) -> None:
        """Free the device buffers and the graph. Safe to call more than once."""
        self._graphs = {}
        self._model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["CHANNELS", "PRECISIONS", "GpuFramePath", "PendingFrame", "blend_linear", "resize_matrices"]
