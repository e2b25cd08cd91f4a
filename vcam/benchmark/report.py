"""A benchmark's record: the machine, JSON (strict), a Markdown table and a PNG plot.

A report is a plain dict {"kind", "created", "command", "system", "settings", "notes", "rows"}; each row a
flat dict. Rows whose "status" is not "ok" were skipped or failed, with their "reason": they stay in the
JSON and are listed under the table, never silently dropped.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import subprocess
from pathlib import Path

ENGINE_COLUMNS = (("backend", "backend", -1), ("device", "device", -1), ("precision", "precision", -1),
                  ("model", "model", -1), ("size", "size", -1), ("p50_ms", "p50 ms", 2),
                  ("p95_ms", "p95 ms", 2), ("fps", "FPS", 1), ("speedup", "× torch fp32", 2), ("runs", "runs", -1))
PIPELINE_COLUMNS = (("input", "input", -1), ("resolution", "resolution", -1), ("mode", "mode", -1),
                    ("frames", "frames", -1), ("fps", "FPS", 1), ("latency_p50_ms", "e2e p50 ms", 1),
                    ("latency_p95_ms", "e2e p95 ms", 1), ("refresh_hz", "refresh Hz", 1),
                    ("cpu_ms_per_frame", "CPU ms/frame", 1), ("cpu_machine_pct", "CPU % machine", 0), ("load_1m", "load", 2),
                    ("fps_ratio", "FPS ÷ no-harm.", 2), ("stages", "stages p50/p95 ms (loop CPU p50)", -1))


def system_info() -> dict:
    """CPU, usable cores, GPU, library versions and git commit: figures are never read without their machine."""
    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") else None  # not in the lean runtime
    cpu = platform.processor() or "unknown"
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.lower().startswith("model name")), cpu)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpu = torch.cuda.get_device_name(0) if torch is not None and torch.cuda.is_available() else None
    try:
        commit = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        commit = None
    return {"cpu": {"model": cpu, "cores": cores}, "gpu": gpu, "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "torch": getattr(torch, "__version__", None)}, "git_commit": commit,
            "load_avg": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def describe(system: dict) -> str:
    gpu = f", GPU {system['gpu']}" if system.get("gpu") else ""
    load = f", load {system['load_avg'][0]:.2f}" if system.get("load_avg") else ""
    return f"{system['cpu']['model']}, {system['cpu']['cores']} cores{gpu}, torch {system['versions']['torch']}{load}"


def new_report(kind: str, command: list[str], settings: dict) -> dict:
    """An empty report of `kind` ("engine" or "pipeline") stamped with time, command and machine."""
    return {"kind": kind, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(command), "system": system_info(), "settings": settings, "notes": [], "rows": []}


def _clean(value):
    """JSON has no NaN or infinity: write them as null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return str(value) if isinstance(value, Path) else value


def _fmt(value, digits: int) -> str:
    bad = value is None or (isinstance(value, float) and not math.isfinite(value))
    return "–" if bad else f"{value:.{digits}f}" if isinstance(value, float) and digits >= 0 else str(value)


def to_markdown(report: dict) -> str:
    """The whole report as Markdown: machine, command, table, skipped configurations, notes."""
    rows = [r for r in report["rows"] if r.get("status") == "ok"]
    columns = ENGINE_COLUMNS if report["kind"] == "engine" else PIPELINE_COLUMNS
    out = [f"# vcam bench {report['kind']}", "", f"- Machine: {describe(report['system'])}",
           f"- Command: `{report['command']}`",
           f"- Date: {report['created']}, commit {report['system'].get('git_commit') or 'unknown'}", "",
           "| " + " | ".join(h for _, h, _ in columns) + " |",
           "|" + "|".join("---" if d < 0 else "---:" for _, _, d in columns) + "|"]
    for row in rows:
        stages, cpu = row.get("stages_ms") or {}, row.get("stages_cpu_ms") or {}
        row = {**row, "stages": ", ".join(f"{k} {_fmt(v['p50'], 1)}/{_fmt(v['p95'], 1)} ({_fmt(cpu.get(k), 1)})"
                                          for k, v in stages.items())}
        out.append("| " + " | ".join(_fmt(row.get(k), d) for k, _, d in columns) + " |")
    skipped = [r for r in report["rows"] if r.get("status") != "ok"]
    if skipped:
        out += ["", "Skipped or failed:", ""]
        keys = ("backend", "precision", "model", "size", "input", "mode")
        out += [f"- {' '.join(str(r[k]) for k in keys if r.get(k) is not None)}: {r['status']}: {r.get('reason')}"
                for r in skipped]
    if report.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def plot(report: dict, path: Path) -> Path | None:
    """Engine: p50 latency against net size, one line per backend/precision/model. Pipeline: output FPS and
    latency p95 per input, one bar per mode. None when no row ran."""
    rows = [r for r in report["rows"] if r.get("status") == "ok"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, works headless
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 if report["kind"] == "engine" else 2, figsize=(10, 4), squeeze=False)
    if report["kind"] == "engine":
        lines: dict[str, list] = {}
        for r in rows:
            lines.setdefault(f"{r['backend']} {r['device']} {r['precision']} {r['model']}", []).append(
                (r["size"], r["p50_ms"]))
        for label, points in sorted(lines.items()):
            axes[0][0].plot(*zip(*sorted(points)), marker="o", label=label)
        axes[0][0].set(xlabel="net size (px, square)", ylabel="p50 ms per network run", yscale="log")
    else:
        labels = [f"{r['input']} {r['mode']}" for r in rows]
        for ax, key, title in zip(axes[0], ("fps", "latency_p95_ms"), ("output FPS", "latency p95 (ms)")):
            ax.barh(labels, [r.get(key) or 0.0 for r in rows])
            ax.set_title(title)
    for ax in axes[0]:
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"vcam bench {report['kind']}: {describe(report['system'])}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_all(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write `<kind>.json`, `<kind>.md` and `<kind>.png` (when a row ran) into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / report["kind"]
    written = {"json": stem.with_suffix(".json"), "markdown": stem.with_suffix(".md")}
    written["json"].write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    written["markdown"].write_text(to_markdown(report), encoding="utf-8")
    png = plot(report, stem.with_suffix(".png"))
    if png is not None:
        written["png"] = png
    return written
