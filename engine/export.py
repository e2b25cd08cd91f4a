"""ONNX export of any model from engine.phnet.create_model, and a torch vs ONNX Runtime parity check.

The graph is the forward contract of engine/phnet.py, statistics included:
inputs composite, mask, reference, stats_in, momentum; outputs `engine.phnet.output_names(model)`
(harmonized or coefficients, then stats_out). With height/width None the H and W axes (and the batch)
are dynamic; otherwise only the batch is. The legacy TorchScript
exporter (dynamo=False) is used: the model is written with export-friendly ops (engine/pn.py), and the
tracer handles them with dynamic shapes in one pass, without the dynamo exporter's extra dependencies.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.backends.base import INPUT_NAMES
from engine.phnet import output_names


def example_inputs(model: nn.Module, height: int = 64, width: int = 64, batch: int = 1, seed: int = 0):
    """Random inputs of the forward contract (a soft blob mask, reference = 1 - mask, momentum 0.5)."""
    generator = torch.Generator().manual_seed(seed)
    composite = torch.rand(batch, 3, height, width, generator=generator)
    ys = torch.linspace(-1, 1, height).view(1, 1, height, 1)
    xs = torch.linspace(-1, 1, width).view(1, 1, 1, width)
    mask = torch.sigmoid(8 * (0.5 - (ys**2 + xs**2))).expand(batch, 1, height, width).contiguous()
    stats_in = torch.rand(batch, model.stats_size, generator=generator) * 0.5
    momentum = torch.tensor([0.5])
    return composite, mask, 1.0 - mask, stats_in, momentum


def _check_export_args(height, width, opset) -> None:
    if (height is None) != (width is None):
        raise ValueError(f"give both height and width or neither, got height={height}, width={width}")
    for label, size in (("height", height), ("width", width)):
        if size is not None and (not isinstance(size, int) or size < 8 or size % 8):
            raise ValueError(f"{label} must be a positive multiple of 8, got {size!r}")
    if opset < 17:
        raise ValueError(f"opset must be >= 17, got {opset}")


def export_onnx(
    model: nn.Module, path, height: int | None = None, width: int | None = None, opset: int = 17,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export `model` (in eval mode, on CPU) to ONNX and run onnx.checker on the file.

    Args:
        model: a model from engine.phnet.create_model (any device/mode; a CPU eval copy is exported).
        path: output .onnx file (parent directories are created).
        height, width: fixed input size (multiples of 8), or both None for dynamic H and W.
        opset: ONNX opset, >= 17.
        metadata: key/value strings recorded in the file's metadata_props (engine.backends.graph reads
            them with ONNX Runtime: what weights the graph was made from).

    Returns:
        The path written.

    Raises:
        ValueError: only one of height/width given, a size that is not a positive multiple of 8, or
            opset < 17.
        RuntimeError: the exporter or onnx.checker failed (message names the cause).
    """
    import onnx

    _check_export_args(height, width, opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().eval()
    dynamic = height is None
    # Trace at a size where every grid is non-trivial; dynamic axes make the graph size-independent.
    inputs = example_inputs(model, height or 64, width or 96)
    outputs = output_names(model)
    axes = {name: {0: "batch"} for name in (*INPUT_NAMES[:4], *outputs)}
    if dynamic:
        for name in ("composite", "mask", "reference"):
            axes[name].update({2: "height", 3: "width"})
        # The first output is the image (H, W) or the coefficient grid (H/f, W/f): its own symbols.
        axes[outputs[0]].update({2: "out_height", 3: "out_width"})
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shape-derived values: handled in pn.py
            torch.onnx.export(
                model,
                inputs,
                str(path),
                input_names=list(INPUT_NAMES),
                output_names=list(outputs),
                dynamic_axes=axes,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        if metadata:
            _record_metadata(path, metadata)
        onnx.checker.check_model(str(path))
    except Exception as error:  # noqa: BLE001 - one clear line for the CLI
        raise RuntimeError(
            f"ONNX export of {getattr(model, 'name', type(model).__name__)} failed: {error}"
        ) from error
    return path


def _record_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Add key/value strings to an ONNX file's metadata_props, in place."""
    import onnx

    graph = onnx.load(str(path))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.save(graph, str(path))


def check_onnx_parity(model: nn.Module, path, inputs) -> dict[str, float]:
    """Run the ONNX file with ONNX Runtime (CPU) and eager torch on `inputs`; return max abs diffs.

    Args:
        model: the torch model the file was exported from.
        path: the .onnx file.
        inputs: (composite, mask, reference, stats_in, momentum) torch tensors.

    Returns:
        {output name: max |torch - onnx|} for both outputs (harmonized or coefficients, stats_out).

    Raises:
        RuntimeError: onnxruntime is not installed or cannot load/run the file.
    """
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise RuntimeError("check_onnx_parity needs onnxruntime (pip install onnxruntime)") from error
    model = copy.deepcopy(model).cpu().eval()
    with torch.no_grad():
        expected = model(*inputs)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feeds = {name: t.detach().cpu().numpy().astype(np.float32) for name, t in zip(INPUT_NAMES, inputs)}
        got = session.run(list(output_names(model)), feeds)
    except Exception as error:  # noqa: BLE001
        raise RuntimeError(f"ONNX Runtime could not run {path}: {error}") from error
    return {name: float(np.abs(e.numpy() - g).max()) for name, e, g in zip(output_names(model), expected, got)}


#: The parity the shipped graph keeps with torch (max abs difference of either output, example inputs).
SHIPPED_TOLERANCE = 1e-4
PARITY_SIZES = ((64, 96), (144, 256))


def export_shipped_graph(weights, out=None, opset: int = 17) -> tuple[Path, dict[str, float]]:
    """Write the ONNX graph that ships beside a weights file (dynamic size, with the weights' sha256, model
    name and graph sources hash in its metadata) and check it against torch at PARITY_SIZES.

    Args:
        weights: the .safetensors file (its .json beside it).
        out: the .onnx path (default: beside the weights, same stem).
        opset: ONNX opset.

    Returns:
        (the path, {output name: worst max abs diff over PARITY_SIZES}).

    Raises:
        RuntimeError: the export failed or the graph differs from torch by more than SHIPPED_TOLERANCE.
        ValueError, FileNotFoundError: a bad weights file.
    """
    from engine.backends.graph import MODEL_KEY, SOURCES_KEY, WEIGHTS_KEY, sources_hash
    from engine.weights import load_weights, model_info

    info = model_info(weights)
    model = load_weights(info.weights_path)
    out = Path(out) if out is not None else info.graph_path
    tmp = out.with_name(f".{out.stem}.tmp.onnx")
    metadata = {WEIGHTS_KEY: info.sha256, MODEL_KEY: info.name, SOURCES_KEY: sources_hash()}
    export_onnx(model, tmp, opset=opset, metadata=metadata)
    worst: dict[str, float] = {}
    for h, w in PARITY_SIZES:
        for name, diff in check_onnx_parity(model, tmp, example_inputs(model, h, w)).items():
            worst[name] = max(worst.get(name, 0.0), diff)
    if max(worst.values()) > SHIPPED_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"the exported graph differs from torch by {max(worst.values()):.2e} "
                           f"(> {SHIPPED_TOLERANCE:g}); nothing written")
    tmp.replace(out)
    return out, worst
