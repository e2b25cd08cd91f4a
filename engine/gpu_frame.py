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
head's colour transforms applied to the person's own colours at full resolution and the person composited
over the background again all stay on the GPU; the output is downloaded once. The picture is
`engine.Harmonizer.apply(estimate(composite, mask), composite, mask, foreground=image,
background=background)`'s: `image` is the person's own colours (the camera picture, or vcam.composite's
foreground estimate at the soft edge). On CUDA the device part is one CUDA graph (one launch
instead of hundreds of small kernels), and nothing waits for the GPU except `result()` (the download).

The maths is engine.device_harmonizer's: the CPU path's steps (engine.resampling, engine.corrections,
engine.scene), each in its torch form beside the NumPy one, so the two give the same picture
(tests/test_gpu_frame.py compares them on a moving person and on real frames). This module moves the
frames: pinned host slots, the frames' own CUDA stream, the CUDA graph, the one wait in `result()`.

Only models whose first output is "coefficients" (the affine head, the shipped weights) run here: an image
head needs a lift fitted per frame (engine.lifts), which `engine.Harmonizer` does.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from engine import colour_prior
from engine import gate as gate_mod
from engine.device_harmonizer import DeviceHarmonizer
from engine.inputs import check_image, mask_for_upload, smoothing_seconds, strength_share
from engine.resampling import net_shape

PRECISIONS = ("fp32", "fp16", "bf16")
CHANNELS = ("rgb", "bgr")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


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
        net_size: the network's longer side (engine.resampling.net_shape).
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
        sharpness: undo a sharpening of the person, as Harmonizer(sharpness=True) (engine.sharpness; off
            by default, as in the app: the detector filters the whole frame every frame).

    Raises:
        TypeError, ValueError: an unusable model or argument (names expected vs actual).
        RuntimeError: CUDA asked for and not available.
    """

    def __init__(self, model: torch.nn.Module, size: tuple[int, int], *, background: np.ndarray | None = None,
                 device: str | torch.device = "cuda", precision: str | None = None, net_size: int = 256,
                 smoothing: float = 0.0, strength: float = 1.0, reference: np.ndarray | None = None,
                 channels: str = "rgb", cuda_graph: bool = True, depth: int = 2, prior: bool = True,
                 fps: float = 30.0, gate: bool = True, sharpness: bool = False):
        width, height, precision = _check_arguments(model, size, device, precision, net_size, channels, depth)
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.size, self.frame_shape = (width, height), (height, width)
        self._stream = None  # made below on CUDA; setters used before then run on the default stream
        self.net_shape = net_shape(height, width, net_size)
        self.precision, self.channels, self.depth = precision, channels, depth
        self._model_dtype = _DTYPES[precision]
        self._dtype = torch.float32 if precision == "fp32" else torch.float16
        self.harmonizing = True  # False: the composite alone (no network), e.g. the harmonize hotkey
        dev = self.device
        # Device inputs and output: fixed buffers, so a CUDA graph can read and write them every frame.
        self._image = torch.zeros(height, width, 3, dtype=torch.uint8, device=dev)
        self._background = torch.zeros(height, width, 3, dtype=torch.uint8, device=dev)
        self._mask = {torch.uint8: torch.zeros(height, width, dtype=torch.uint8, device=dev),
                      torch.float32: torch.zeros(height, width, dtype=torch.float32, device=dev)}
        self._mask_is_u8 = torch.zeros((), dtype=torch.bool, device=dev)
        self._out = torch.zeros(height, width, 3, dtype=torch.uint8, device=dev)
        self._harmonizer = self._device_harmonizer(model, reference, prior, gate, sharpness)
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

    def _device_harmonizer(self, model, reference, prior: bool, gate: bool, sharpness: bool) -> DeviceHarmonizer:
        """The model on the device in its precision, with the colour prior the weights were trained behind and
        the gate fitted for them (engine.colour_prior, engine.gate), as engine.Harmonizer loads them."""
        if reference is not None:
            reference = np.asarray(reference, np.float32)
            if reference.shape != self.frame_shape:
                raise ValueError(f"reference must be {self.frame_shape} like the frames, got {reference.shape}")
        device_model = copy.deepcopy(model).eval().to(device=self.device, dtype=self._model_dtype)
        for p in device_model.parameters():
            p.requires_grad_(False)
        self.stats_size = int(device_model.stats_size)
        return DeviceHarmonizer(device_model, self.frame_shape, self.net_shape, self._dtype, reference,
                                colour_prior.prior_for(model) if prior else None,
                                gate_mod.gate_for(model) if gate else None, sharpness)

    def _allocate_host(self, height: int, width: int, depth: int, cuda: bool) -> None:
        # Host side: pinned slots on CUDA (asynchronous copies need page-locked memory).
        self._host_in = [torch.zeros(height, width, 3, dtype=torch.uint8, pin_memory=cuda) for _ in range(depth)]
        self._host_mask: dict[tuple[int, torch.dtype], torch.Tensor] = {}
        self._host_out_t = [torch.zeros(height, width, 3, dtype=torch.uint8, pin_memory=cuda) for _ in range(depth)]
        self._host_out = [t.numpy() for t in self._host_out_t]
        self._uploaded = [None] * depth  # CUDA events: the slot's host buffers may be overwritten after these
        self._next = 0

    # -- settings ---------------------------------------------------------------------------------------

    @property
    def smoothing(self) -> float:
        return self._smoothing_value

    @smoothing.setter
    def smoothing(self, value: float) -> None:
        value = self._smoothing_value = smoothing_seconds(value)
        with self._ordered():  # a kernel with the value as argument: no wait for the GPU
            self._harmonizer.set_smoothing(value, self.fps)

    @property
    def strength(self) -> float:
        return self._strength_value

    @strength.setter
    def strength(self, value: float) -> None:
        value = self._strength_value = strength_share(value)
        with self._ordered():
            self._harmonizer.strength.fill_(value)

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
            self._harmonizer.reset()

    # -- per frame ----------------------------------------------------------------------------------------

    def _check_image(self, image, name: str) -> None:
        check_image(image, name, (*self.frame_shape, 3))

    def _mask_array(self, mask) -> np.ndarray:
        return mask_for_upload(mask, self.frame_shape)

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
        which is therefore saved around it (all of it: a capture mid-stream keeps the stream's state)."""
        state = self._harmonizer.state
        with torch.cuda.stream(self._stream), torch.inference_mode():
            saved = {k: v.clone() for k, v in state.items()}
            for _ in range(3):
                self._step(harmonize)
        self._stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, stream=self._stream):
            self._step(harmonize)
        self._graphs[harmonize] = graph
        with torch.cuda.stream(self._stream):
            for k, v in saved.items():
                state[k].copy_(v)
        self._stream.synchronize()

    def _step(self, harmonize: bool) -> None:
        """One frame from the device input buffers to `self._out`; every branch is a torch.where."""
        dt = self._dtype
        chw = [2, 1, 0] if self.channels == "bgr" else [0, 1, 2]  # RGB order for the network
        image = self._image.permute(2, 0, 1)[chw].unsqueeze(0).to(dt)  # (1, 3, H, W) 0..255
        background = self._background.permute(2, 0, 1)[chw].unsqueeze(0).to(dt)
        mask_f = torch.where(self._mask_is_u8, self._mask[torch.uint8].float() * (1 / 255),
                             torch.nan_to_num(self._mask[torch.float32].clamp(0, 1), nan=0.0))
        out = self._harmonizer.step(image, background, mask_f, harmonize)
        self._out.copy_(out[0][chw].permute(1, 2, 0).to(torch.uint8))

    def close(self) -> None:
        """Free the device buffers and the graph. Safe to call more than once."""
        self._graphs = {}
        self._harmonizer = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["CHANNELS", "PRECISIONS", "GpuFramePath", "PendingFrame"]
