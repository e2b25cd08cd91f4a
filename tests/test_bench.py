"""The benchmark commands: pure helpers against references, and the commands end to end on tiny inputs.

No timing is asserted anywhere: the end-to-end tests check that `vcam bench ...` runs through
`vcam.cli.main` and writes well-formed JSON, Markdown and a plot with the expected keys, and the timing
core is checked against a fake clock.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import read_video

from vcam.benchmark import app, network, report, timing
from vcam.cli import main


# -- timing core ------------------------------------------------------------------------------------
class FakeClock:
    """Each call to fn() advances the clock by the next duration: exact, machine-independent timings."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self):
        return self.now

    def work(self):
        self.now += self.durations[self.calls % len(self.durations)]
        self.calls += 1


def test_time_calls_warms_up_syncs_and_summarizes():
    clock = FakeClock([0.010, 0.020, 0.030, 0.040])
    syncs = []
    result = timing.time_calls(clock.work, warmup=2, runs=4, sync=lambda: syncs.append(clock.calls), clock=clock)
    assert clock.calls == 6  # 2 warm-up + 4 timed
    assert len(syncs) == 5  # once after warm-up, once per timed call
    # Timed calls are the 3rd..6th durations: 30, 40, 10, 20 ms.
    assert result.samples_ms == pytest.approx([30.0, 40.0, 10.0, 20.0])
    summary = result.summary()
    assert summary["p50_ms"] == pytest.approx(25.0)
    assert summary["p95_ms"] == pytest.approx(float(np.percentile([30, 40, 10, 20], 95)))
    assert summary["fps"] == pytest.approx(4 / 0.100)
    assert set(summary) == {"runs", "warmup", "p50_ms", "p95_ms", "mean_ms", "min_ms", "fps"}


def test_time_calls_stops_at_the_budget_but_keeps_min_runs():
    clock = FakeClock([1.0])
    result = timing.time_calls(clock.work, warmup=0, runs=100, max_seconds=2.5, min_runs=2, clock=clock)
    assert result.runs == 3  # 1 + 1 + 1 s: the third run crosses the 2.5 s budget
    clock = FakeClock([10.0])
    result = timing.time_calls(clock.work, warmup=0, runs=100, max_seconds=1.0, min_runs=4, clock=clock)
    assert result.runs == 4


@pytest.mark.parametrize("kwargs", [{"runs": 0}, {"warmup": -1}, {"max_seconds": 0.0}, {"min_runs": 0}])
def test_time_calls_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        timing.time_calls(lambda: None, **kwargs)


# -- the engine grid's options ---------------------------------------------------------------------
@pytest.mark.parametrize("text", ["12", "256,abc", "0", "-8", ""])
def test_parse_sizes_rejects_bad_sizes(text):
    with pytest.raises(ValueError, match="--sizes"):
        network.parse_sizes(text)


def test_parse_list_checks_each_entry():
    assert network.parse_list("torch, onnxruntime", network.BACKENDS, "--backends") == ("torch", "onnxruntime")
    for text in ("", "torch,tpu"):
        with pytest.raises(ValueError, match="--backends"):
            network.parse_list(text, network.BACKENDS, "--backends")


# -- report -----------------------------------------------------------------------------------------
def test_report_json_is_strict_and_markdown_lists_skips(tmp_path):
    rep = report.new_report("engine", ["vcam", "bench", "engine"], {"runs": 1})
    json.dumps(rep["system"])
    assert rep["system"]["cpu"]["cores"] >= 1 and rep["system"]["versions"]["torch"]
    rep["rows"] = [
        {"backend": "torch", "device": "cpu", "precision": "fp32", "model": "m", "size": 64,
         "status": "ok", "p50_ms": 1.5, "p95_ms": float("nan"), "fps": float("inf"), "runs": 3},
        {"backend": "tensorrt", "device": "cpu", "precision": "fp16", "model": "m",
         "size": None, "status": "skipped", "reason": "needs CUDA"},
    ]
    written = report.write_all(rep, tmp_path)
    data = json.loads(written["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["rows"][0]["p95_ms"] is None and data["rows"][0]["fps"] is None
    text = written["markdown"].read_text()
    assert "| torch | cpu | fp32 | m | 64 | 1.50 | – | – |" in text
    assert "tensorrt fp16 m: skipped: needs CUDA" in text
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the commands end to end ------------------------------------------------------------------------
ROW_KEYS = {"backend", "device", "precision", "model", "size", "status", "p50_ms", "p95_ms", "fps", "speedup",
            "runs", "finite"}


def test_bench_engine_command_writes_json_markdown_and_plot(tmp_path, capsys):
    code = main(["bench", "engine", "--backends", "torch,onnxruntime", "--models", "phnet-xs", "--sizes", "32",
                 "--runs", "2", "--warmup", "1", "--threads", "1", "--device", "cpu", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "engine.json").read_text())
    assert data["kind"] == "engine" and data["system"]["cpu"]["cores"] >= 1
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} == {"torch", "onnxruntime"}
    for row in ok:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["model"] == "phnet-xs" and row["size"] == 32 and row["runs"] >= 1
        assert row["finite"] is True and row["p50_ms"] > 0 and math.isfinite(row["speedup"])
    torch_row = next(r for r in ok if r["backend"] == "torch")
    assert torch_row["speedup"] == pytest.approx(1.0)
    # Both CPU backends in the same run, and what `auto` picks next to the fastest row.
    assert any(n.startswith("auto on cpu picks onnxruntime") for n in data["notes"])
    skipped = [r for r in data["rows"] if r["status"] == "skipped"]
    assert skipped and all(r["precision"] == "fp16" and "CUDA" in r["reason"] for r in skipped)
    assert (tmp_path / "engine.md").read_text().startswith("# vcam bench engine")
    assert (tmp_path / "engine.png").stat().st_size > 0


def test_bench_engine_command_bad_input_is_one_line(tmp_path, capsys):
    assert main(["bench", "engine", "--models", "nope", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'nope'" in err[0]
    assert main(["bench", "engine", "--sizes", "30", "--out", str(tmp_path)]) == 1
    assert "multiples of 8" in capsys.readouterr().err
    assert main(["bench", "engine", "--backends", "tpu", "--out", str(tmp_path)]) == 1
    assert "--backends" in capsys.readouterr().err
    assert main(["bench"]) == 2
    assert "choose a benchmark" in capsys.readouterr().err


# -- the pipeline benchmark -------------------------------------------------------------------------
def test_parse_input():
    assert app.parse_input("720p") == ("720p", (1280, 720), None)
    assert app.parse_input("4K") == ("4k", (3840, 2160), None)
    assert app.parse_input("160x96") == ("160x96", (160, 96), None)
    with pytest.raises(ValueError, match="even"):
        app.parse_input("161x96")
    with pytest.raises(FileNotFoundError, match="video not found"):
        app.parse_input("missing.mp4")
    with pytest.raises(ValueError, match="expected"):
        app.parse_input("huge")


def test_generate_synthetic_clip_has_the_asked_size_rate_and_frames(tmp_path):

    clip = app.generate_clip((96, 64), 7, 30.0, tmp_path, "tiny", source=None)
    assert clip.origin.startswith("synthetic") and clip.frames == 7
    frames, fps = read_video(clip.path)
    assert fps == pytest.approx(30.0)
    assert len(frames) == 7 and frames[0].shape == (64, 96, 3)
    assert not np.array_equal(frames[0], frames[6])  # the silhouette moves
    again = app.generate_clip((96, 64), 7, 30.0, tmp_path, "tiny", source=None)
    assert again.path == clip.path and again.path.stat().st_mtime == clip.path.stat().st_mtime  # reused


def test_ratios_from_rows():
    def row(harmonize, paced, fps, p95, refresh=None):
        return {"status": "ok", "input": "720p", "resolution": "1280x720", "harmonize": harmonize, "paced": paced,
                "mode": ("harmonize" if harmonize else "no-harmonize") + (" @30fps" if paced else ""),
                "fps": fps, "latency_p50_ms": p95 / 2, "latency_p95_ms": p95, "refresh_hz": refresh,
                "source_fps": 30.0}

    rows = [row(True, False, 40.0, 30.0, 8.0), row(False, False, 80.0, 10.0),
            row(True, True, 29.9, 60.0, 6.0), row(False, True, 30.0, 20.0)]
    app.add_ratios(rows)
    assert rows[0]["fps_ratio"] == pytest.approx(0.5) and rows[0]["latency_added_p50_ms"] == pytest.approx(10.0)
    assert rows[2]["fps_ratio"] == pytest.approx(29.9 / 30.0)
    assert "fps_ratio" not in rows[1]


PIPELINE_ROW_KEYS = {"input", "resolution", "mode", "harmonize", "paced", "status", "frames", "fps",
                     "latency_p50_ms", "latency_p95_ms", "stages_ms", "refresh_hz", "cpu_util", "dropped"}


def test_bench_pipeline_command_with_and_without_harmonization(tmp_path):
    code = main(["bench", "pipeline", "--inputs", "160x96", "--frames", "6", "--warmup-frames", "2",
                 "--camera-rate", "30", "--model", "phnet-xs", "--backend", "torch", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "pipeline.json").read_text())
    assert data["kind"] == "pipeline" and data["inputs"][0]["size"] == [160, 96]
    rows = data["rows"]
    assert [(r["harmonize"], r["paced"]) for r in rows] == [(True, False), (False, False), (True, True),
                                                            (False, True)]
    for r in rows:
        assert r["status"] == "ok", r.get("reason")
        assert PIPELINE_ROW_KEYS <= set(r), PIPELINE_ROW_KEYS - set(r)
        assert r["fps"] > 0 and r["latency_p95_ms"] >= r["latency_p50_ms"] > 0 and r["cpu_util"] > 0
        assert {"segment", "composite", "output"} <= set(r["stages_ms"])
    assert [r["frames"] for r in rows] == [6, 6, 6, 6]  # exactly --frames timed after the warm-up
    harmonized = [r for r in rows if r["harmonize"]]
    assert all("harmonize" in r["stages_ms"] and r["refresh_hz"] is not None and r["fps_ratio"] > 0
               for r in harmonized)
    assert harmonized[0]["harmonizer"]["backend"].startswith("torch")
    assert (tmp_path / "pipeline.md").read_text().startswith("# vcam bench pipeline")
    assert (tmp_path / "pipeline.png").stat().st_size > 0
    assert list((tmp_path / "inputs").glob("160x96_*.mp4"))


def test_bench_pipeline_bad_input_is_one_line(tmp_path, capsys):
    assert main(["bench", "pipeline", "--inputs", "nope", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--inputs" in err[0]
    assert main(["bench", "pipeline", "--inputs", "160x96", "--source", str(tmp_path / "x.mp4"),
                 "--out", str(tmp_path)]) == 1
    assert "--source video not found" in capsys.readouterr().err
    assert main(["bench", "pipeline", "--modes", "sometimes", "--out", str(tmp_path)]) == 1
    assert "--modes" in capsys.readouterr().err


def test_bench_pipeline_stops_a_slow_run_at_its_budget(tmp_path):
    code = main(["bench", "pipeline", "--inputs", "160x96", "--frames", "400", "--warmup-frames", "2",
                 "--camera-rate", "0", "--modes", "no-harmonize", "--max-seconds", "0.3", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "pipeline.json").read_text())
    (row,) = data["rows"]
    assert row["status"] == "ok" and row["budget_hit"] is True and 2 <= row["frames"] < 400
    assert any("budget" in n for n in data["notes"])


@pytest.mark.gpu
def test_bench_engine_on_cuda_runs_fp32_and_fp16(tmp_path):
    """Where CUDA exists: torch in fp32 and fp16 on the GPU, each with its speed-up over torch fp32."""
    code = main(["bench", "engine", "--backends", "torch", "--precisions", "fp32,fp16", "--models", "phnet-xs",
                 "--sizes", "64", "--runs", "3", "--warmup", "1", "--device", "cuda", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "engine.json").read_text())
    assert data["system"]["gpu"]
    rows = {r["precision"]: r for r in data["rows"]}
    for precision in ("fp32", "fp16"):
        assert rows[precision]["status"] == "ok" and rows[precision]["device"] == "cuda"
        assert rows[precision]["finite"] is True and rows[precision]["speedup"] > 0
    assert rows["fp32"]["speedup"] == pytest.approx(1.0)
