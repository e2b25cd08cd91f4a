"""ONNX export (engine/export.py): the graph checks, and torch vs ONNX Runtime parity, stats included."""

from __future__ import annotations

import onnx
import pytest
import torch

from engine.export import INPUT_NAMES, check_onnx_parity, example_inputs, export_onnx
from engine.phnet import create_model, output_shape

TOLERANCE = 1e-4  # fp32, acceptance 2


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def trained_looking(name, **overrides):
    """A model in eval mode whose BatchNorm running statistics are not the identity defaults (and, for the
    affine head, whose zero-initialised layers are not zero, so the parity check sees real outputs)."""
    torch.manual_seed(0)
    model = create_model(name, **overrides)
    with torch.no_grad():
        for name_, p in model.named_parameters():
            if name_.startswith(("head.", "global_transform.fc2")):
                p.normal_(std=0.05)
        model(*example_inputs(model, 32, 32, batch=2, seed=1))  # one train-mode pass updates BN stats
    return model.eval()


@pytest.mark.parametrize("name,overrides,first", [("phnet-xs", {}, "harmonized"), ("phnet-s", {}, "harmonized"),
                                                  ("stats", {}, "harmonized"),
                                                  ("phnet-xs", {"output": "affine"}, "coefficients")])
def test_dynamic_export_matches_torch_at_two_sizes(name, overrides, first, tmp_path):
    model = trained_looking(name, **overrides)
    path = export_onnx(model, tmp_path / f"{name}.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == list(INPUT_NAMES)
    assert [o.name for o in graph.output] == [first, "stats_out"]
    for height, width in [(64, 64), (40, 72)]:  # the second is not divisible by the 3, 4, 5 grids
        inputs = example_inputs(model, height, width, batch=2, seed=height)
        diffs = check_onnx_parity(model, path, inputs)
        assert set(diffs) == {first, "stats_out"}
        assert max(diffs.values()) <= TOLERANCE, diffs
        with torch.no_grad():
            assert tuple(model(*inputs)[0].shape) == output_shape(model, 2, height, width)


def test_fixed_size_export_has_static_spatial_dims(tmp_path):
    model = trained_looking("phnet-xs")
    path = export_onnx(model, tmp_path / "fixed.onnx", height=32, width=48)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim]
    assert dims[1:] == [3, 32, 48]
    assert max(check_onnx_parity(model, path, example_inputs(model, 32, 48)).values()) <= TOLERANCE


@pytest.mark.parametrize(
    "kwargs,message",
    [({"height": 64}, "both"), ({"height": 30, "width": 32}, "multiple of 8"), ({"opset": 13}, "opset")],
)
def test_bad_export_arguments_raise(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_onnx(create_model("stats"), tmp_path / "x.onnx", **kwargs)


def test_parity_check_reports_a_missing_file(tmp_path):
    model = create_model("stats")
    with pytest.raises(RuntimeError, match="ONNX Runtime"):
        check_onnx_parity(model, tmp_path / "missing.onnx", example_inputs(model, 16, 16))
