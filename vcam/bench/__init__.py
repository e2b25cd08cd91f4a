"""Benchmarks: the pure engine (`engine.py`) apart from the whole pipeline (`pipeline.py`).

Both follow one recipe (`timing.py`): warm up, synchronize where a GPU is involved, time many runs,
report the median and p95, and write JSON, a Markdown table and a PNG plot (`report.py`) next to the
machine description (`sysinfo.py`). The `vcam bench` subcommand and `scripts/bench_*.py` are thin CLIs
over these modules. Nothing here is imported by the app or the engine.
"""
