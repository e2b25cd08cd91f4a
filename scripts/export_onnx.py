"""Regenerate the ONNX graph that ships beside the weights (run it after replacing the weights).

    .venv/bin/python scripts/export_onnx.py                      # engine/weights/default.onnx
    .venv/bin/python scripts/export_onnx.py --weights other.safetensors --out other.onnx
    make onnx                                                    # the same as the first line

Needs the full environment (torch and onnx: `make setup`). Writes a dynamic-size graph with the weights'
sha256 in its metadata (the runtime refuses a graph made from other weights; tests/test_shipped_graph.py
fails on a stale one) after checking it against torch at two sizes (engine.export.SHIPPED_TOLERANCE).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.errors import report_error  # noqa: E402
from engine.weights import DEFAULT_WEIGHTS  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="the .safetensors file")
    parser.add_argument("--out", type=Path, default=None, help="the .onnx file (default: beside the weights)")
    args = parser.parse_args(argv)
    try:
        from engine.export import SHIPPED_TOLERANCE, export_shipped_graph

        path, worst = export_shipped_graph(args.weights, args.out)
    except Exception as exc:  # one line, the CLI policy
        return report_error(exc, "export_onnx: ")
    diffs = ", ".join(f"{name} {diff:.1e}" for name, diff in worst.items())
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); parity with torch: max abs diff {diffs} "
          f"(tolerance {SHIPPED_TOLERANCE:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
