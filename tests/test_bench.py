"""The benchmark commands: pure helpers against references, and the commands end to end on tiny inputs.

No timing is asserted anywhere (issue 6, acceptance 4): the end-to-end tests check that `vcam bench ...`
runs through `vcam.cli.main` and writes well-formed JSON, Markdown and a plot with the expected keys.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import read_video

from vcam.bench import engine as bench_engine
from vcam.bench import flops, report, sysinfo, timing
from vcam.cli import main


# -- timing core ------------------------------------------------------------------------------------
@pytest.mark.parametrize("q", [0, 5, 50, 95, 99, 100])
@pytest.mark.parametrize("samples", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(np.linspace(0, 1, 37) ** 2)])
def test_percentile_matches_numpy(samples, q):
    assert timing.percentile(samples, q) == pytest.approx(float(np.percentile(samples, q)))


def test_percentile_rejects_bad_input():
    with pytest.raises(ValueError, match="at least one sample"):
        timing.percentile([], 50)
    with pytest.raises(ValueError, match=r"q in \[0, 100\]"):
        timing.percentile([1.0], 101)


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
    assert result.p50_ms == pytest.approx(25.0)
    assert result.p95_ms == pytest.approx(float(np.percentile([30, 40, 10, 20], 95)))
    assert result.fps == pytest.approx(4 / 0.100)
    assert set(result.summary()) == {"runs", "warmup", "p50_ms", "p95_ms", "mean_ms", "min_ms", "fps"}


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


# -- FLOPs and peaks --------------------------------------------------------------------------------
def test_count_flops_of_a_convolution_is_two_per_multiply_add():
    import torch

    conv = torch.nn.Conv2d(3, 16, 3, padding=1, bias=False)
    expected = 2 * 3 * 16 * 9 * 32 * 48
    count, how = flops.count_flops(conv, lambda h, w, d: (torch.zeros(1, 3, h, w, device=d),), 32, 48)
    assert (count, how) == (expected, "meta")
    assert conv.weight.device.type == "cpu"  # the caller's model is left where it was


def test_count_flops_falls_back_to_a_scaled_cpu_count():
    import torch

    class DataDependent(torch.nn.Module):  # .item() cannot run on meta tensors
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)

        def forward(self, x):
            return self.conv(x) * float(x.mean().item() >= 0)

    model = DataDependent()
    count, how = flops.count_flops(model, lambda h, w, d: (torch.zeros(1, 3, h, w, device=d),), 128, 128,
                                   fallback_size=32)
    assert how.startswith("cpu@32x32")
    assert count == 2 * 3 * 8 * 9 * 128 * 128


def test_gpu_peaks_and_achieved():
    assert flops.gpu_peak_tflops("NVIDIA H200", "fp16")[0] == 989.0
    assert flops.gpu_peak_tflops("NVIDIA H100 PCIe", "fp16")[0] == 756.0
    peak, note = flops.gpu_peak_tflops("Some Future GPU", "fp16")
    assert peak is None and "unknown GPU" in note
    tflops, fraction = flops.achieved(int(2e12), 0.5, 8.0)
    assert tflops == pytest.approx(4.0) and fraction == pytest.approx(0.5)
    assert flops.achieved(None, 1.0, 8.0) == (None, None)


def test_cpu_peak_estimate():
    peak, note = flops.cpu_peak_tflops(2, 2500.0, {"avx2", "fma"})
    assert peak == pytest.approx(2 * 2500e6 * 32 / 1e12) and "AVX2" in note
    zen4, _ = flops.cpu_peak_tflops(2, 2500.0, {"avx512f", "avx2", "fma"}, "AuthenticAMD", 25)
    intel, _ = flops.cpu_peak_tflops(2, 2500.0, {"avx512f", "avx2", "fma"}, "GenuineIntel", 6)
    assert intel == pytest.approx(2 * zen4)
    assert flops.cpu_peak_tflops(2, None, set())[0] is None


def test_sysinfo_is_json_ready():
    info = sysinfo.collect()
    json.dumps(info)
    assert info["cpu"]["cores"] >= 1 and info["versions"]["torch"]
    assert "cores" in sysinfo.describe(info)


# -- planning ---------------------------------------------------------------------------------------
def test_plan_on_cpu_skips_fp16_and_unavailable_backends_with_reasons():
    settings = bench_engine.resolve(bench_engine.EngineBenchSettings(
        backends=("torch", "onnxruntime", "tensorrt"), variants=("eager", "cudagraph"),
        models=("phnet-xs",), sizes=(64, 128), device="cpu"), has_cuda=False)
    availability = {"torch": None, "onnxruntime": None, "tensorrt": "TensorRT needs a CUDA GPU"}
    cases = bench_engine.plan(settings, availability)
    skipped = {(c.backend, c.variant, c.precision): c.skip for c in cases if c.skip}
    assert skipped[("tensorrt", "default", "*")] == "TensorRT needs a CUDA GPU"
    assert "CUDA graphs" in skipped[("torch", "cudagraph", "*")]
    assert "fp16 on the CPU" in skipped[("torch", "default", "fp16")]
    runnable = {(c.backend, c.variant, c.precision, c.size) for c in cases if not c.skip}
    assert runnable == {(b, v, "fp32", s) for b, v in [("torch", "default"), ("onnxruntime", "default"),
                                                        ("torch", "eager")] for s in (64, 128)}


def test_resolve_reduces_cpu_defaults_and_says_so():
    s = bench_engine.resolve(bench_engine.EngineBenchSettings(), has_cuda=False)
    assert s.device == "cpu" and s.models == bench_engine.CPU_DEFAULT_MODELS
    assert s.sizes == bench_engine.CPU_DEFAULT_SIZES and s.variants == ()
    assert any("default models reduced" in n for n in s.notes)
    with pytest.raises(ValueError, match="torch.cuda.is_available"):
        bench_engine.resolve(bench_engine.EngineBenchSettings(device="cuda"), has_cuda=False)
    with pytest.raises(ValueError, match="unknown 'tpu'"):
        bench_engine.resolve(bench_engine.EngineBenchSettings(backends=("tpu",)), has_cuda=False)


@pytest.mark.parametrize("text", ["12", "256,abc", "0", "-8"])
def test_parse_sizes_rejects_bad_sizes(text):
    with pytest.raises(ValueError, match="--sizes"):
        bench_engine.parse_sizes(text)


# -- report -----------------------------------------------------------------------------------------
def test_report_json_is_strict_and_markdown_lists_skips(tmp_path):
    rep = report.new_report("engine", ["vcam", "bench", "engine"], sysinfo.collect(), {"runs": 1})
    rep["rows"] = [
        {"backend": "torch", "variant": "eager", "device": "cpu", "precision": "fp32", "model": "m", "size": 64,
         "status": "ok", "p50_ms": 1.5, "p95_ms": float("nan"), "fps": float("inf"), "runs": 3},
        {"backend": "tensorrt", "variant": "default", "device": "cpu", "precision": "*", "model": "*",
         "size": None, "status": "skipped", "reason": "needs CUDA"},
    ]
    written = report.write_all(rep, tmp_path, "engine")
    data = json.loads(written["json"].read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["rows"][0]["p95_ms"] is None and data["rows"][0]["fps"] is None
    text = written["markdown"].read_text()
    assert "| torch | eager | cpu | fp32 | m | 64 | 1.50 |" in text
    assert "tensorrt default * *: skipped: needs CUDA" in text
    assert written["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the commands end to end ------------------------------------------------------------------------
ROW_KEYS = {"backend", "variant", "device", "precision", "model", "size", "status", "p50_ms", "p95_ms", "fps",
            "gflops", "tflops", "peak_pct", "speedup", "runs", "finite"}


def test_bench_engine_command_writes_json_markdown_and_plot(tmp_path, capsys):
    code = main(["bench", "engine", "--backends", "torch,onnxruntime", "--models", "phnet-xs", "--sizes", "32",
                 "--runs", "2", "--warmup", "1", "--threads", "1", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "engine.json").read_text())
    assert data["kind"] == "engine" and data["system"]["cpu"]["cores"] >= 1
    ok = [r for r in data["rows"] if r["status"] == "ok"]
    assert {r["backend"] for r in ok} == {"torch", "onnxruntime"}
    for row in ok:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert row["model"] == "phnet-xs" and row["size"] == 32 and row["runs"] >= 1
        assert row["finite"] is True and row["p50_ms"] > 0 and math.isfinite(row["gflops"])
    torch_row = next(r for r in ok if r["backend"] == "torch")
    assert torch_row["speedup"] == pytest.approx(1.0)
    # acceptance 3: both CPU backends in the same run and a verdict on what `auto` picks.
    picks = data["auto"]["picks"]
    assert picks and picks[0]["auto"] in ("torch", "onnxruntime") and isinstance(picks[0]["auto_is_fastest"], bool)
    assert any(n.startswith("auto on cpu picks") for n in data["notes"])
    assert (tmp_path / "engine.md").read_text().startswith("# vcam bench engine")
    assert (tmp_path / "engine.png").stat().st_size > 0


def test_bench_engine_command_bad_input_is_one_line(tmp_path, capsys):
    assert main(["bench", "engine", "--models", "nope", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown model 'nope'" in err[0]
    assert main(["bench", "engine", "--sizes", "30", "--out", str(tmp_path)]) == 1
    assert "multiples of 8" in capsys.readouterr().err
    assert main(["bench"]) == 2
    assert "choose a benchmark" in capsys.readouterr().err


# -- the pipeline benchmark -------------------------------------------------------------------------
def test_parse_input():
    from vcam.bench import pipeline

    assert pipeline.parse_input("720p") == ("720p", (1280, 720), None)
    assert pipeline.parse_input("4K") == ("4k", (3840, 2160), None)
    assert pipeline.parse_input("160x96") == ("160x96", (160, 96), None)
    with pytest.raises(ValueError, match="even"):
        pipeline.parse_input("161x96")
    with pytest.raises(FileNotFoundError, match="video not found"):
        pipeline.parse_input("missing.mp4")
    with pytest.raises(ValueError, match="expected"):
        pipeline.parse_input("huge")


def test_generate_synthetic_clip_has_the_asked_size_rate_and_frames(tmp_path):

    from vcam.bench import pipeline

    clip = pipeline.generate_clip((96, 64), 7, 30.0, tmp_path, "tiny", source=None)
    assert clip.origin.startswith("synthetic") and clip.frames == 7
    frames, fps = read_video(clip.path)
    assert fps == pytest.approx(30.0)
    assert len(frames) == 7 and frames[0].shape == (64, 96, 3)
    assert not np.array_equal(frames[0], frames[6])  # the silhouette moves
    again = pipeline.generate_clip((96, 64), 7, 30.0, tmp_path, "tiny", source=None)
    assert again.path == clip.path and again.path.stat().st_mtime == clip.path.stat().st_mtime  # reused


def test_ratios_and_targets_from_rows():
    from vcam.bench import pipeline

    def row(harmonize, paced, fps, p95, refresh=None):
        return {"status": "ok", "input": "720p", "resolution": "1280x720", "harmonize": harmonize, "paced": paced,
                "mode": ("harmonize" if harmonize else "no-harmonize") + (" @30fps" if paced else ""),
                "fps": fps, "latency_p50_ms": p95 / 2, "latency_p95_ms": p95, "refresh_hz": refresh,
                "source_fps": 30.0}

    rows = [row(True, False, 40.0, 30.0, 8.0), row(False, False, 80.0, 10.0),
            row(True, True, 29.9, 60.0, 6.0), row(False, True, 30.0, 20.0)]
    pipeline.add_ratios(rows)
    assert rows[0]["fps_ratio"] == pytest.approx(0.5) and rows[0]["latency_added_p50_ms"] == pytest.approx(10.0)
    assert rows[2]["fps_ratio"] == pytest.approx(29.9 / 30.0)
    assert "fps_ratio" not in rows[1]
    lines = pipeline.check_targets(rows)
    assert lines[0].startswith("720p target (harmonize): MET")
    assert lines[1].startswith("720p target (harmonize @30fps): NOT MET") and "latency p95 60.0 ms <= 50 NO" in lines[1]


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


def test_time_interleaved_runs_round_robin_with_one_budget():
    order = []
    clock = FakeClock([0.5])

    def make(name):
        def fn():
            order.append(name)
            clock.work()
        return fn

    result = timing.time_interleaved({"a": make("a"), "b": make("b")}, warmup=1, runs=10, max_seconds=1.2,
                                     clock=clock)
    assert order[:2] == ["a", "b"]  # warm-up: each once
    assert order[2:] == ["a", "b"] * 3  # rounds alternate; 3 rounds reach the 1.2 s budget of the slowest
    assert result["a"].runs == result["b"].runs == 3
    with pytest.raises(ValueError):
        timing.time_interleaved({})


@pytest.mark.gpu
def test_bench_engine_gpu_fast_path_variants(tmp_path):
    """Where CUDA exists: eager, CUDA-graph and compiled variants in fp32 and fp16 run, next to eager fp32."""
    code = main(["bench", "engine", "--backends", "torch", "--variants", "eager,channels_last,cudagraph,compile",
                 "--precisions", "fp32,fp16", "--models", "phnet-xs", "--sizes", "64", "--runs", "3",
                 "--warmup", "1", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "engine.json").read_text())
    assert data["system"]["gpu"]["name"]
    rows = {(r["variant"], r["precision"]): r for r in data["rows"] if r["model"] == "phnet-xs"}
    for variant in ("default", "eager", "channels_last", "cudagraph", "compile"):
        for precision in ("fp32", "fp16"):
            r = rows[(variant, precision)]
            assert r["status"] == "ok", r.get("reason")
            assert r["device"] == "cuda" and r["finite"] is True and r["speedup"] > 0
    assert rows[("eager", "fp32")]["speedup"] == pytest.approx(1.0)


def test_gpu_target_lines():
    rows = [{"status": "ok", "device": "cuda", "model": "phnet", "size": 512, "precision": "fp16",
             "backend": "torch", "variant": v, "p50_ms": ms, "speedup": sp}
            for v, ms, sp in (("eager", 3.0, 2.0), ("cudagraph", 1.2, 5.0))]
    assert bench_engine.target_lines(rows) == [
        "GPU target phnet 512² fp16 p50 <= 1.5 ms: MET: best torch/cudagraph 1.200 ms, 5.0× eager fp32 torch"]
    assert bench_engine.target_lines([{**rows[0], "device": "cpu"}]) == []


def test_bench_pipeline_stops_a_slow_run_at_its_budget(tmp_path):
    code = main(["bench", "pipeline", "--inputs", "160x96", "--frames", "400", "--warmup-frames", "2",
                 "--camera-rate", "0", "--modes", "no-harmonize", "--max-seconds", "0.3", "--out", str(tmp_path)])
    assert code == 0
    data = json.loads((tmp_path / "pipeline.json").read_text())
    (row,) = data["rows"]
    assert row["status"] == "ok" and row["budget_hit"] is True and 2 <= row["frames"] < 400
    assert any("budget" in n for n in data["notes"])
