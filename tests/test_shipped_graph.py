"""The ONNX graph that ships beside the weights (engine/weights/default.onnx): made from the current weights,
equal to torch within engine.export.SHIPPED_TOLERANCE, refused when stale. Regenerate it with
`make onnx` (scripts/export_onnx.py) after replacing the weights; these tests fail until then."""

from __future__ import annotations

import dataclasses
import logging
import shutil

import numpy as np
import pytest

from engine.backends import create_backend
from engine.backends.graph import MODEL_KEY, WEIGHTS_KEY, graph_metadata, onnx_for, shipped_graph
from engine.export import (
    PARITY_SIZES,
    SHIPPED_TOLERANCE,
    check_onnx_parity,
    example_inputs,
    export_shipped_graph,
)
from engine.weights import DEFAULT_WEIGHTS, load_weights, model_info, read_metadata, save_weights

STALE = "stale: regenerate it with `make onnx` (scripts/export_onnx.py)"


def test_the_shipped_graph_was_made_from_the_shipped_weights():
    info = model_info(DEFAULT_WEIGHTS)
    meta = graph_metadata(info.graph_path)
    assert meta[WEIGHTS_KEY] == info.sha256 == read_metadata(DEFAULT_WEIGHTS)["sha256"], STALE
    assert meta[MODEL_KEY] == info.name
    assert shipped_graph(info) == (info.graph_path, "")
    assert info.graph_path.stat().st_size < 2_000_000


@pytest.mark.parametrize("size", PARITY_SIZES)
def test_the_shipped_graph_equals_torch(size):
    model = load_weights(DEFAULT_WEIGHTS)
    diffs = check_onnx_parity(model, DEFAULT_WEIGHTS.with_suffix(".onnx"), example_inputs(model, *size, seed=size[0]))
    assert max(diffs.values()) <= SHIPPED_TOLERANCE, f"{diffs}; {STALE}"


def test_the_harmonizer_runs_the_shipped_graph_without_exporting():
    with create_backend("onnxruntime", model_info(DEFAULT_WEIGHTS), "cpu") as backend:
        assert backend.onnx_path == DEFAULT_WEIGHTS.with_suffix(".onnx")
        assert backend.output_names == ("coefficients", "stats_out") and backend.model_name == "phnet-xs"


def test_a_stale_graph_is_refused_and_an_export_runs_instead(caplog):
    """A graph that records other weights never runs: with torch, the model is exported instead (and says
    why); the two agree."""
    info = model_info(DEFAULT_WEIGHTS)
    stale = dataclasses.replace(info, sha256="0" * 64)
    path, reason = shipped_graph(stale)
    assert path is None and "made from other weights" in reason
    caplog.set_level(logging.WARNING, logger="engine.backends.graph")
    exported = onnx_for(stale)
    assert exported != info.graph_path and "exporting the model through torch" in caplog.text
    inputs = [t.numpy() for t in example_inputs(load_weights(DEFAULT_WEIGHTS), 64, 96)]
    with create_backend("onnxruntime", stale, "cpu") as a, create_backend("onnxruntime", info, "cpu") as b:
        assert a.onnx_path == exported and b.onnx_path == info.graph_path
        for x, y in zip(a.run(*inputs), b.run(*inputs)):
            assert np.abs(x - y).max() <= 1e-5


def test_export_script_writes_a_graph_beside_other_weights(tmp_path):
    from engine.phnet import create_model

    weights = save_weights(create_model("phnet-xs", widths=(4, 4, 8, 8, 8, 8), output="affine"),
                           tmp_path / "tiny.safetensors")
    path, worst = export_shipped_graph(weights)
    assert path == tmp_path / "tiny.onnx" and max(worst.values()) <= SHIPPED_TOLERANCE
    assert graph_metadata(path)[WEIGHTS_KEY] == model_info(weights).sha256
    assert shipped_graph(model_info(weights))[0] == path
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".onnx"), path)  # another model's graph: refused
    assert "made from other weights" in shipped_graph(model_info(weights))[1]
