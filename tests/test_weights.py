"""engine.weights: safetensors + JSON round trip, and one clear ValueError for every way a file is wrong."""

from __future__ import annotations

import json

import pytest
import torch

from engine.phnet import create_model
from engine.weights import DEFAULT_WEIGHTS, load_weights, model_fingerprint, read_metadata, save_weights

TINY = {"widths": (4, 4, 8, 8, 8, 8)}


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return create_model("phnet-xs", **TINY).eval()


@pytest.fixture
def saved(tiny_model, tmp_path):
    return save_weights(tiny_model, tmp_path / "tiny.safetensors", extra={"recipe": "test", "epochs": 1})


def _inputs(model):
    from engine.export import example_inputs

    return example_inputs(model, 32, 48)


def test_round_trip_rebuilds_same_model_and_outputs(tiny_model, saved):
    loaded = load_weights(saved)
    assert loaded.name == tiny_model.name and loaded.config == tiny_model.config
    assert not loaded.training
    with torch.no_grad():
        a, sa = tiny_model(*_inputs(tiny_model))
        b, sb = loaded(*_inputs(loaded))
    assert torch.equal(a, b) and torch.equal(sa, sb)
    meta = read_metadata(saved)
    assert meta["extra"] == {"recipe": "test", "epochs": 1} and meta["model"] == "phnet-xs"
    assert model_fingerprint(loaded) == model_fingerprint(tiny_model)


def test_stats_model_without_parameters_round_trips(tmp_path):
    path = save_weights(create_model("stats"), tmp_path / "stats")
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    assert load_weights(path).name == "stats"


def test_json_path_and_stem_are_accepted(saved):
    assert load_weights(saved.with_suffix(".json")).name == "phnet-xs"


def test_corrupt_file_is_one_clear_value_error(saved):
    meta = json.loads(saved.with_suffix(".json").read_text())
    del meta["sha256"]  # so the safetensors parser itself must notice
    saved.with_suffix(".json").write_text(json.dumps(meta))
    saved.write_bytes(b"\x07not a safetensors file at all" * 10)
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        load_weights(saved)
    assert "\n" not in str(info.value)


def test_truncated_file_is_one_clear_value_error(saved):
    meta = json.loads(saved.with_suffix(".json").read_text())
    del meta["sha256"]
    saved.with_suffix(".json").write_text(json.dumps(meta))
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_weights(saved)


def test_flipped_bytes_are_caught_by_the_checksum(saved):
    data = bytearray(saved.read_bytes())
    data[-3] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        load_weights(saved)


def test_wrong_shapes_are_named(tiny_model, tmp_path):
    path = save_weights(tiny_model, tmp_path / "w.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["config"]["widths"] = [4, 4, 8, 8, 8, 16]  # the file's tensors no longer fit this config
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"shape|missing|unexpected"):
        load_weights(path)


def test_other_model_name_mismatch(tiny_model, tmp_path):
    path = save_weights(tiny_model, tmp_path / "w.safetensors")
    meta = json.loads(path.with_suffix(".json").read_text())
    meta["model"] = "stats"
    meta["config"] = {}
    path.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match model 'stats'"):
        load_weights(path)


def test_non_finite_weights_rejected(tiny_model, tmp_path):
    with torch.no_grad():
        next(tiny_model.parameters()).fill_(float("nan"))
    path = save_weights(tiny_model, tmp_path / "nan.safetensors")
    with pytest.raises(ValueError, match="NaN"):
        load_weights(path)


def test_bad_json_and_unknown_model(saved):
    saved.with_suffix(".json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_weights(saved)
    saved.with_suffix(".json").write_text(json.dumps({"model": "no-such-net", "config": {}}))
    with pytest.raises(ValueError, match="buildable model"):
        load_weights(saved)


def test_missing_files(tmp_path, saved):
    with pytest.raises(FileNotFoundError):
        load_weights(tmp_path / "absent.safetensors")
    saved.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="config"):
        load_weights(saved)


def test_save_rejects_non_models(tmp_path):
    with pytest.raises(TypeError):
        save_weights(object(), tmp_path / "x.safetensors")


def test_never_unpickles_a_pickle(tmp_path):
    """A torch.save (pickle) file renamed to .safetensors is refused, not executed."""
    path = tmp_path / "evil.safetensors"
    torch.save({"x": torch.zeros(1)}, path)
    path.with_suffix(".json").write_text(json.dumps({"model": "stats", "config": {}}))
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_weights(path)


def test_default_weights_path_is_in_the_package():
    assert DEFAULT_WEIGHTS.parent.name == "weights" and DEFAULT_WEIGHTS.parent.parent.name == "engine"
    if DEFAULT_WEIGHTS.is_file():
        assert load_weights(DEFAULT_WEIGHTS).name in ("phnet", "phnet-s", "phnet-xs", "stats")
