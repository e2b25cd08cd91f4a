"""Model weights on disk: a `.safetensors` file of tensors beside a `.json` file that says how to rebuild
the model (its name and config) plus free metadata (training recipe, metrics), and (for shipped weights)
the model's ONNX graph beside them (engine.backends.graph).

Imports no torch: `ModelInfo` describes a weights file from its JSON alone, which is all the ONNX Runtime
runtime needs; `load_weights` (torch) rebuilds the nn.Module for training, export and the torch backends.

Never unpickles: safetensors holds raw tensors only, the JSON is parsed as JSON, and the model is rebuilt
with `engine.phnet.create_model(name, **config)` before the tensors are checked (names, shapes, finite)
and loaded. Every way a file can be wrong ends in one `ValueError` line naming the file and the problem.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import first_line

log = logging.getLogger(__name__)

# The weights the package ships (written by trainer/; see docs). Harmonizer(model=None) loads these.
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "default.safetensors"

FORMAT = "vcam-weights"
FORMAT_VERSION = 1


def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(tensors, config) paths for a path given as either file or without a suffix."""
    path = Path(path)
    if path.suffix == ".json":
        return path.with_suffix(".safetensors"), path
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors") if path.suffix == "" else path
    return path, path.with_suffix(".json")


def _config_dict(model) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        return {}
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    raise TypeError(f"model.config must be a dataclass or dict, got {type(config).__name__}")


def _tuples(value: Any) -> Any:
    """JSON turns tuples into lists; configs use tuples (hashable, immutable), so turn them back."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (weights checksums, the TensorRT cache key)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tensors(model) -> dict:
    # clone(): safetensors refuses tensors that share storage (tied weights, views).
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def model_fingerprint(model) -> str:
    """A short hash of a model's name, config and every tensor's bytes (cache keys for exports/engines)."""
    import torch

    digest = hashlib.sha256()
    digest.update(str(getattr(model, "name", type(model).__name__)).encode())
    digest.update(json.dumps(_config_dict(model), sort_keys=True, default=str).encode())
    for key, tensor in sorted(_tensors(model).items()):
        digest.update(key.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()[:16]


def save_weights(model, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write `path` (.safetensors) and `path.with_suffix(".json")` (model name, config, `extra`).

    Both files are written to a temporary name first and renamed, so a crash never leaves a half file.

    Args:
        model: a model from `engine.phnet.create_model` (has `.name` and `.config`).
        path: where the tensors go; a missing suffix gets ".safetensors".
        extra: JSON-serialisable metadata (training recipe, metrics, data sources).

    Returns:
        The .safetensors path.

    Raises:
        TypeError: `model` is not an nn.Module with a `.name`, or `extra` is not JSON-serialisable.
    """
    import torch
    from safetensors.torch import save_file

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    name = getattr(model, "name", None)
    if not isinstance(name, str):
        raise TypeError("model must have a .name (str) so that load_weights can rebuild it")
    tensors_path, config_path = _paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tensors_path.with_name(tensors_path.name + ".tmp")
    save_file(_tensors(model), str(tmp), metadata={"format": FORMAT, "model": name})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": name,
        "config": _config_dict(model),
        "sha256": file_sha256(tmp),
        "extra": extra or {},
    }
    try:
        text = json.dumps(meta, indent=2, sort_keys=False)
    except TypeError as exc:
        tmp.unlink(missing_ok=True)
        raise TypeError(f"extra metadata must be JSON-serialisable: {exc}") from exc
    tmp_json = config_path.with_name(config_path.name + ".tmp")
    tmp_json.write_text(text + "\n")
    os.replace(tmp, tensors_path)
    os.replace(tmp_json, config_path)
    return tensors_path


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed JSON beside a weights file (model, config, extra).

    Raises:
        FileNotFoundError: the JSON file is missing.
        ValueError: it is not valid JSON or lacks the model name.
    """
    _, config_path = _paths(path)
    if not config_path.is_file():
        raise FileNotFoundError(f"weights config not found: {config_path} (expected beside the .safetensors)")
    try:
        meta = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"corrupt weights config {config_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
        raise ValueError(f"corrupt weights config {config_path}: expected an object with a 'model' name")
    if not isinstance(meta.get("config", {}), dict):
        raise ValueError(f"corrupt weights config {config_path}: 'config' must be an object")
    return meta


def load_weights(path: str | os.PathLike, device="cpu"):
    """Rebuild the model described by the JSON beside `path` and load the tensors into it.

    Args:
        path: the .safetensors file (or its .json, or the common stem).
        device: where the model goes.

    Returns:
        The model in eval mode on `device`.

    Raises:
        FileNotFoundError: either file is missing.
        ValueError: a corrupt, truncated or mismatched file (one line saying which and why).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from engine.phnet import create_model

    tensors_path, config_path = _paths(path)
    if not tensors_path.is_file():
        raise FileNotFoundError(f"weights file not found: {tensors_path}")
    meta = read_metadata(tensors_path)
    expected_sha = meta.get("sha256")
    if isinstance(expected_sha, str) and file_sha256(tensors_path) != expected_sha:
        raise ValueError(f"corrupt weights {tensors_path}: contents do not match the sha256 in {config_path.name}")
    try:
        model = create_model(meta["model"], **_tuples(meta.get("config", {})))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights config {config_path} does not describe a buildable model: "
                         f"{first_line(exc)}") from None
    try:
        tensors = load_file(str(tensors_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"corrupt or truncated weights file {tensors_path}: {first_line(exc)}") from None

    _check_tensors(tensors, model.state_dict(), tensors_path, meta["model"])
    model.load_state_dict(tensors, strict=True)
    model.weights_path = tensors_path.resolve()  # files the config names (colour_prior) lie beside it
    return model.eval().to(device)


@dataclass(frozen=True)
class ModelInfo:
    """A model known from its weights files alone, without torch: what the ONNX Runtime runtime needs.

    `config` is the model's config dataclass (engine.config), so `config.keep_detail` and
    `config.colour_prior` read as on the nn.Module; `module()` builds that (torch) for the torch backends
    and exports; `graph_path` is where its ONNX graph ships (engine.backends.graph checks it was made from these
    weights).
    """

    name: str
    config: Any
    weights_path: Path
    sha256: str

    @property
    def graph_path(self) -> Path:
        return self.weights_path.with_suffix(".onnx")

    def module(self):
        """The nn.Module these weights describe (needs torch).

        Raises:
            RuntimeError: torch is not installed.
            ValueError: the weights file is corrupt or does not match its config.
        """
        _require_torch(f"building {self.name} from {self.weights_path.name}")
        return load_weights(self.weights_path)


def _require_torch(what: str) -> None:
    from engine.backends.base import torch_available

    if not torch_available():
        raise RuntimeError(f"{what} needs torch, which is not installed (pip install 'vcam[train]')")


def model_info(path: str | os.PathLike) -> ModelInfo:
    """Describe a weights file from its JSON without building the model (no torch).

    The tensors file's checksum is verified against the JSON's, as load_weights does.

    Raises:
        FileNotFoundError: either file is missing.
        ValueError: a corrupt file, or a config that does not describe a model.
    """
    from engine.config import VARIANTS, PHNetConfig, StatsConfig

    tensors_path, config_path = _paths(path)
    if not tensors_path.is_file():
        raise FileNotFoundError(f"weights file not found: {tensors_path}")
    meta = read_metadata(tensors_path)
    sha = file_sha256(tensors_path)
    if isinstance(meta.get("sha256"), str) and sha != meta["sha256"]:
        raise ValueError(f"corrupt weights {tensors_path}: contents do not match the sha256 in {config_path.name}")
    name, overrides = meta["model"], _tuples(meta.get("config", {}))
    try:
        if name == "stats":
            config = StatsConfig(**overrides)
        elif name in VARIANTS:
            config = PHNetConfig(**{**VARIANTS[name], **overrides})
        else:
            raise ValueError(f"unknown model {name!r}; valid names: {', '.join((*VARIANTS, 'stats'))}")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights config {config_path} does not describe a buildable model: "
                         f"{first_line(exc)}") from None
    return ModelInfo(name, config, tensors_path.resolve(), sha)


def _check_tensors(tensors: dict, expected: dict, tensors_path: Path, name: str) -> None:
    """The file's tensors against the model's state dict: names, shapes, dtypes, finite.

    Raises:
        ValueError: the first mismatch, naming the tensor.
    """
    import torch

    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise ValueError(f"weights {tensors_path} do not match model {name!r}: " + ", ".join(parts))
    for key, ref in expected.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise ValueError(f"weights {tensors_path} do not match model {name!r}: {key} has shape "
                             f"{tuple(got.shape)}, expected {tuple(ref.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise ValueError(f"corrupt weights {tensors_path}: {key} contains NaN or infinity")
        if got.dtype != ref.dtype:  # an int tensor where a float belongs is a wrong file, not a cast
            raise ValueError(f"weights {tensors_path} do not match model {name!r}: {key} is "
                             f"{str(got.dtype).replace('torch.', '')}, expected "
                             f"{str(ref.dtype).replace('torch.', '')}")


def resolve_runtime_model(model=None, weights=None) -> tuple[Any, str]:
    """(model, description) for engine.Harmonizer: a ModelInfo wherever weights files say what runs (no
    torch needed: the ONNX Runtime backend runs the graph shipped beside them), else an nn.Module.

    model: None (the shipped default weights, or the "stats" model with a warning where none ship), a
    model name (its shipped weights when the default file holds that model, else random initial weights
    with a warning), a weights path, or an nn.Module. weights: a .safetensors path (wins over model).

    Raises:
        ValueError: weights that hold another model than `model` names, an unknown name, a bad file.
        FileNotFoundError: a weights file that does not exist.
        TypeError: a model argument of another type.
        RuntimeError: a model without weights files (built by torch) where torch is not installed.
    """
    if weights is not None:
        info = model_info(weights)
        if isinstance(model, str) and model != info.name and not _looks_like_path(model):
            raise ValueError(f"weights {weights} hold model {info.name!r}, but model={model!r} was asked for")
        return info, f"{info.name} from {weights}"
    if model is None:
        if DEFAULT_WEIGHTS.is_file():
            return model_info(DEFAULT_WEIGHTS), f"default weights {DEFAULT_WEIGHTS.name}"
        log.warning("no trained weights ship yet (%s is missing): using the statistics-only 'stats' model, "
                    "which has no learned weights", DEFAULT_WEIGHTS)
        return _built("stats"), "stats (no trained weights found)"
    if isinstance(model, (str, os.PathLike)):
        if _looks_like_path(model):
            return model_info(model), f"weights {model}"
        if model != "stats" and DEFAULT_WEIGHTS.is_file():
            if read_metadata(DEFAULT_WEIGHTS).get("model") == model:
                return model_info(DEFAULT_WEIGHTS), f"{model} (default weights)"
        built = _built(str(model))
        if model != "stats":
            log.warning("model %r has no weights given: running it with random initial weights", model)
        return built, str(model)
    if hasattr(model, "state_dict") and hasattr(model, "eval"):  # an nn.Module (torch is imported already)
        return model.eval(), getattr(model, "name", type(model).__name__)
    raise TypeError(f"model must be None, a model name, a weights path or an nn.Module, got {type(model).__name__}")


def _built(name: str):
    _require_torch(f"model {name!r} (no weights files, so no shipped ONNX graph)")
    from engine.phnet import create_model

    return create_model(name).eval()


def resolve_model(model=None, weights=None):
    """The nn.Module resolver (`vcam export`, the trainer's evaluation): resolve_runtime_model's choice,
    built (needs torch). Returns (model in eval mode, a description for logs).

    Raises:
        ValueError, FileNotFoundError, TypeError: as resolve_runtime_model.
        RuntimeError: torch is not installed.
    """
    resolved, description = resolve_runtime_model(model, weights)
    return (resolved.module() if isinstance(resolved, ModelInfo) else resolved), description


def _looks_like_path(value) -> bool:
    text = str(value)
    return isinstance(value, os.PathLike) or text.endswith((".safetensors", ".json")) or os.sep in text
