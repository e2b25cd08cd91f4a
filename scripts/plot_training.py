"""Plot held-out PSNR against training steps (with the identity and statistics-only baselines).

    .venv/bin/python scripts/plot_training.py --run runs/default --baselines out/eval_identity.json \
        out/eval_stats.json --out docs/model_card_psnr.png

Reads RUN/eval.csv (written by trainer.train every --eval-every steps) and, optionally, trainer.evaluate
JSON files whose overall PSNR is drawn as horizontal lines.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="run directory with eval.csv")
    p.add_argument("--baselines", type=Path, nargs="*", default=[], help="trainer.evaluate --json files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="phnet-xs: held-out PSNR during training")
    args = p.parse_args(argv)
    rows = list(csv.DictReader(open(args.run / "eval.csv")))
    if not rows:
        raise SystemExit(f"error: no evaluations in {args.run / 'eval.csv'}")
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, [float(r["psnr"]) for r in rows], "o-", label="phnet-xs (held-out PSNR)")
    for path, style in zip(args.baselines, ("--", ":", "-.")):
        result = json.loads(path.read_text())
        label = result["subject"].split(":")[-1]
        ax.axhline(result["summary"]["all"]["psnr"], linestyle=style, color="gray", label=f"{label} baseline")
    ax.set_xlabel("training step")
    ax.set_ylabel("PSNR (dB, 256x256, MAX 255)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
