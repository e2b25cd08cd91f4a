"""Plot held-out PSNR against training steps (with the identity, linear and statistics-only baselines).

    .venv/bin/python scripts/plot_training.py --run runs/default --baselines out/eval_identity.json \
        out/eval_stats.json --out docs/model_card_psnr.png

Reads RUN/eval.csv (written by trainer.train every --eval-every steps) and, optionally, trainer.evaluate
JSON files whose overall PSNR (and that of the baselines evaluated beside them) is drawn as horizontal
lines.
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
    p.add_argument("--run", nargs="+", required=True,
                   help="run directories with eval.csv, each DIR or DIR:FIRST_STEP (runs that continue one "
                        "another: --init or --resume, drawn one after the other on one step axis)")
    p.add_argument("--baselines", type=Path, nargs="*", default=[], help="trainer.evaluate --json files")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--title", default="held-out PSNR during training")
    args = p.parse_args(argv)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for spec in args.run:
        directory, _, offset = spec.partition(":")
        rows = list(csv.DictReader(open(Path(directory) / "eval.csv")))
        if not rows:
            raise SystemExit(f"error: no evaluations in {Path(directory) / 'eval.csv'}")
        steps = [int(offset or 0) + int(r["step"]) for r in rows]
        ax.plot(steps, [float(r["psnr"]) for r in rows], "o-", label=f"{Path(directory).name} (held-out PSNR)")
    lines = {}
    for path in args.baselines:  # a file's subject, and the baselines trainer.evaluate put beside it
        result = json.loads(path.read_text())
        if not result["subject"].startswith("weights:"):
            lines[result["subject"].split(":")[0].replace("model", "stats")] = result["summary"]["all"]["psnr"]
        for name, entry in result.get("baselines", {}).items():
            lines[name] = entry["summary"]["all"]["psnr"]
    for (name, psnr), style in zip(sorted(lines.items()), ("--", ":", "-.", (0, (1, 4)))):
        ax.axhline(psnr, linestyle=style, color="gray", label=f"{name} ({psnr:.2f} dB)")
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
