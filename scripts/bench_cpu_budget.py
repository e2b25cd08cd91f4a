"""720p at camera rate on an idle machine and with one core kept busy by another process, one after the other.

    .venv/bin/python scripts/bench_cpu_budget.py --inputs 720p --frames 900 --out out/bench-budget

Runs `vcam bench pipeline --camera-rate 30` twice with the same arguments: first on the machine as it is,
then while a second process spins on one core (a stand-in for the video call's own encoding and
decoding). Writes `<out>/idle/pipeline.*`, `<out>/busy/pipeline.*` and `<out>/budget.md`, the paced rows
of both side by side: FPS, latency, refresh, CPU per output frame and share of the machine. Other
arguments go to `vcam bench pipeline` as they are. The targets (issue 11) are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from vcam.cli import main as vcam_main

COLUMNS = (("mode", "mode"), ("fps", "FPS"), ("dropped", "dropped"), ("latency_p50_ms", "e2e p50 ms"),
           ("latency_p95_ms", "e2e p95 ms"), ("refresh_hz", "refresh Hz"), ("cpu_ms_per_frame", "CPU ms/frame"),
           ("cpu_machine_pct", "CPU % machine"))


def _cell(value) -> str:
    return "–" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def table(runs: dict[str, dict]) -> str:
    """The paced rows of each run, as one Markdown table with the machine state in the first column."""
    lines = ["| machine | " + " | ".join(h for _, h in COLUMNS) + " | stages p50 ms (loop CPU) |",
             "|---|" + "---:|" * len(COLUMNS) + "---|"]
    for state, report in runs.items():
        load = report["system"].get("load_avg") or [None]
        for row in (r for r in report["rows"] if r.get("status") == "ok" and r.get("paced")):
            cpu = row.get("stages_cpu_ms") or {}
            stages = ", ".join(f"{k} {_cell(v['p50'])} ({_cell(cpu.get(k))})" for k, v in row["stages_ms"].items())
            lines.append(f"| {state} (load {_cell(load[0])}) | " + " | ".join(_cell(row.get(k)) for k, _ in COLUMNS)
                         + f" | {stages} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-budget"))
    args, rest = parser.parse_known_args(argv)
    bench = ["bench", "pipeline", "--camera-rate", "30", *rest]
    runs = {}
    if vcam_main([*bench, "--out", str(args.out / "idle")]) != 0:
        return 1
    runs["idle"] = json.loads((args.out / "idle" / "pipeline.json").read_text())
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one core kept busy
    try:
        status = vcam_main([*bench, "--out", str(args.out / "busy")])
    finally:
        burner.terminate()
        burner.wait(timeout=10)
    if status != 0:
        return 1
    runs["one core busy"] = json.loads((args.out / "busy" / "pipeline.json").read_text())
    text = f"# 720p at camera rate, idle and with one core busy\n\nCommand: `{' '.join(['bench_cpu_budget.py', *sys.argv[1:]])}`\n\n"
    (args.out / "budget.md").write_text(text + table(runs), encoding="utf-8")
    print(text + table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
