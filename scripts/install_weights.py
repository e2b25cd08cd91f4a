"""Install a trained checkpoint as the shipped default weights, with its recipe and held-out metrics.

    .venv/bin/python scripts/install_weights.py --weights runs/default/best.safetensors \
        --eval out/eval_model.json --out engine/weights/default.safetensors

Loads the weights with engine.weights.load_weights (checks names/shapes), then writes them again with
engine.weights.save_weights so the JSON beside them carries the training recipe (from the run's metadata)
and the held-out figures (from a trainer.evaluate --json file). A network trained behind a colour prior
(trainer.train --prior) gets that prior copied beside the installed file, and its config names the copy.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from engine.weights import load_weights, read_metadata, save_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--eval", type=Path, nargs="*", default=[], help="trainer.evaluate --json files")
    p.add_argument("--out", type=Path, default=Path("engine/weights/default.safetensors"))
    p.add_argument("--note", default="", help="free text kept in the metadata (hardware, time)")
    p.add_argument("--keep-detail", type=float, default=None,
                   help="affine head: PHNetConfig.keep_detail of the installed file (sigma in network pixels)")
    args = p.parse_args(argv)
    model = load_weights(args.weights)
    prior_name = getattr(model.config, "colour_prior", "")
    if prior_name:  # the run names it by an absolute path (or beside the run's file): ship a copy beside ours
        source = Path(prior_name) if Path(prior_name).is_absolute() else args.weights.parent / prior_name
        target = args.out.parent / "colour_prior.safetensors"
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        target.chmod(0o644)
        model.config.colour_prior = target.name
    if args.keep_detail is not None:
        model.config.keep_detail = args.keep_detail  # an inference setting: the tensors are unchanged
    meta = read_metadata(args.weights)
    extra = dict(meta.get("extra") or {})
    extra["heldout"] = {}
    for path in args.eval:
        result = json.loads(path.read_text())
        entry = {"network_res": result["summary"]}
        if "full_res" in result:
            entry["full_res"] = result["full_res"]["summary"]
        extra["heldout"][result["subject"].split(":")[0] if "weights" in result["subject"] else result["subject"]] = entry
        for name, baseline in result.get("baselines", {}).items():  # identity, linear, stats beside it
            extra["heldout"][name] = {"network_res": baseline["summary"],
                                      **({"full_res": baseline["full_res"]} if "full_res" in baseline else {})}
    if args.note:
        extra["note"] = args.note
    extra["model_card"] = "docs/model_card.md"
    out = save_weights(model, args.out, extra=extra)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB) and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
