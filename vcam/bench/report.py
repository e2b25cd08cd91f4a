"""Writing benchmark results: JSON (the record), Markdown (the table people read), PNG (the plot).

A report is a plain dict: {"kind", "created", "command", "system", "settings", "notes", "rows", ...};
each row a flat dict. Rows with "status" != "ok" are configurations that were skipped or failed, with
their "reason": they stay in the JSON and are listed under the table, never silently dropped.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path

from vcam.bench.sysinfo import describe


def new_report(kind: str, command: list[str], system: dict, settings: dict) -> dict:
    """An empty report of `kind` ("engine" or "pipeline") stamped with time, command and machine."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "system": system,
        "settings": settings,
        "notes": [],
        "rows": [],
    }


def _clean(value):
    """JSON has no NaN or infinity: write them as null rather than invalid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(_clean(v) for v in value)
    return value


def write_json(report: dict, path: Path) -> Path:
    """Write `report` as strict JSON (NaN/inf become null). Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_clean(report), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, int]]) -> str:
    """A Markdown table of `rows` with `columns` given as (key, header, decimals)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" if d < 0 else "---:" for _, _, d in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(k), max(d, 0)) for k, _, d in columns) + " |")
    return "\n".join(lines)


ENGINE_COLUMNS = [
    ("backend", "backend", -1), ("variant", "variant", -1), ("device", "device", -1),
    ("precision", "precision", -1), ("model", "model", -1), ("size", "size", -1),
    ("p50_ms", "p50 ms", 2), ("p95_ms", "p95 ms", 2), ("fps", "FPS", 1),
    ("gflops", "GFLOP/frame", 2), ("tflops", "TFLOP/s", 3), ("peak_pct", "% peak", 1),
    ("dense_pct", "% dense", 1),
    ("speedup", "× eager fp32", 2), ("runs", "runs", -1),
]

PIPELINE_COLUMNS = [
    ("input", "input", -1), ("resolution", "resolution", -1), ("mode", "mode", -1),
    ("frames", "frames", -1), ("fps", "FPS", 1), ("latency_p50_ms", "e2e p50 ms", 1),
    ("latency_p95_ms", "e2e p95 ms", 1), ("refresh_hz", "refresh Hz", 1), ("cpu_util", "CPU util", 2),
    ("fps_ratio", "FPS ÷ no-harm.", 2), ("stages", "stages p50/p95 ms", -1),
]


def _pipeline_row_for_table(row: dict) -> dict:
    stages = row.get("stages_ms") or {}
    text = ", ".join(f"{name} {_fmt(v.get('p50'), 1)}/{_fmt(v.get('p95'), 1)}" for name, v in stages.items())
    return {**row, "stages": text or "–"}


def to_markdown(report: dict) -> str:
    """The whole report as Markdown: machine, command, table, skipped configurations, notes."""
    kind = report["kind"]
    ok = [r for r in report["rows"] if r.get("status", "ok") == "ok"]
    skipped = [r for r in report["rows"] if r.get("status", "ok") != "ok"]
    out = [f"# vcam bench {kind}", "",
           f"- Machine: {describe(report['system'])}",
           f"- Command: `{report['command']}`",
           f"- Date: {report['created']}, commit {report['system'].get('git_commit') or 'unknown'}", ""]
    if kind == "engine":
        out.append(markdown_table(ok, ENGINE_COLUMNS))
    else:
        out.append(markdown_table([_pipeline_row_for_table(r) for r in ok], PIPELINE_COLUMNS))
    if skipped:
        out += ["", "Skipped or failed:", ""]
        for r in skipped:
            what = " ".join(str(r.get(k)) for k in ("backend", "variant", "precision", "model", "size", "input",
                                                     "mode") if r.get(k) is not None)
            out.append(f"- {what}: {r.get('status')}: {r.get('reason')}")
    if report.get("notes"):
        out += ["", "Notes:", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(out) + "\n"


def write_markdown(report: dict, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_markdown(report), encoding="utf-8")
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: never open a window, works headless
    import matplotlib.pyplot as plt

    return plt


def plot_engine(report: dict, path: Path) -> Path | None:
    """Latency (p50, log scale) against net size, one panel per model, one line per backend/variant/
    precision. Returns the path, or None when there is nothing to plot."""
    rows = [r for r in report["rows"] if r.get("status", "ok") == "ok"]
    if not rows:
        return None
    plt = _pyplot()
    from matplotlib import ticker

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        lines: dict[str, list[tuple[int, float]]] = {}
        for r in rows:
            if r["model"] == model:
                label = f"{r['backend']}/{r['variant']} {r['device']} {r['precision']}"
                lines.setdefault(label, []).append((r["size"], r["p50_ms"]))
        for label, points in sorted(lines.items()):
            points.sort()
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_title(model)
        ax.set_xlabel("net size (px, square)")
        ax.set_ylabel("p50 latency (ms)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        sizes = sorted({r["size"] for r in rows if r["model"] == model})
        ax.set_xticks(sizes, [str(v) for v in sizes])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    gpu = report["system"].get("gpu")
    fig.suptitle(f"vcam bench engine: {gpu['name'] if gpu else report['system']['cpu']['model'] + ' (CPU)'}")
    return _save(plt, fig, path)


def _save(plt, fig, path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_pipeline(report: dict, path: Path) -> Path | None:
    """Two panels per input: output FPS and end-to-end latency p95, one bar per mode. Returns the path,
    or None when there is nothing to plot."""
    rows = [r for r in report["rows"] if r.get("status", "ok") == "ok"]
    if not rows:
        return None
    plt = _pyplot()
    inputs = list(dict.fromkeys(r["input"] for r in rows))
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, (ax_fps, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        xs, fps, lat = [], [], []
        for j, name in enumerate(inputs):
            match = [r for r in rows if r["input"] == name and r["mode"] == mode]
            if match:
                xs.append(j + i * width)
                fps.append(match[0].get("fps") or 0.0)
                lat.append(match[0].get("latency_p95_ms") or 0.0)
        ax_fps.bar(xs, fps, width, label=mode)
        ax_lat.bar(xs, lat, width, label=mode)
    for ax, title in ((ax_fps, "output FPS"), (ax_lat, "end-to-end latency p95 (ms)")):
        ax.set_xticks([j + width * (len(modes) - 1) / 2 for j in range(len(inputs))], inputs)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    ax_fps.axhline(30, color="grey", linestyle="--", linewidth=1)
    ax_lat.axhline(50, color="grey", linestyle="--", linewidth=1)
    system = report["system"]
    machine = system["gpu"]["name"] if system.get("gpu") else f"{system['cpu']['model']}, {system['cpu']['cores']} cores"
    fig.suptitle(f"vcam bench pipeline: {machine}", fontsize=10)
    return _save(plt, fig, path)


def write_all(report: dict, out_dir: Path, stem: str) -> dict[str, Path]:
    """Write `<stem>.json`, `<stem>.md` and `<stem>.png` (when there is data to plot) into `out_dir`."""
    out_dir = Path(out_dir)
    written = {"json": write_json(report, out_dir / f"{stem}.json"),
               "markdown": write_markdown(report, out_dir / f"{stem}.md")}
    plot = plot_engine if report["kind"] == "engine" else plot_pipeline
    png = plot(report, out_dir / f"{stem}.png")
    if png is not None:
        written["png"] = png
    return written
