"""Fit engine/weights/sharpness.json: when to undo a sharpening of the person (engine.sharpness).

    python scripts/fit_sharpness.py --data .pack/train --out engine/weights/sharpness.json

For every composite of an iHarmony4-layout training set (its ground truth is the untouched photo): the
shipped Harmonizer's output with the person as it is, and with the person un-sharpened first
(`engine.sharpness.unsharpen`, factor 4); the label is whether un-sharpening brought the person closer to
the truth, weighted by how much (dB). A logistic regression on `sharpness_features` (standardised,
L2-regularised, fitted by Newton's method in NumPy) decides it for new pictures. The fit takes the
training photos only; the held-out figures are `trainer.evaluate --full-res` (docs/model_card.md).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from engine.harmonizer import Harmonizer
from engine.sharpness import FEATURES, sharpness_features, unsharpen
from trainer.datasets import IHarmonyDataset
from trainer.metrics import image_metrics


def collect(data: Path, split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(features n×5, PSNR gain of un-sharpening in dB n) over the set's composites with a person."""
    harmonizer = Harmonizer(sharpness=False)  # the network's correction alone, with and without
    dataset = IHarmonyDataset(data, split=split, size=None)
    features, gains = [], []
    for i in tqdm(range(min(len(dataset), limit or len(dataset))), desc="composites", unit="image"):
        sample = dataset.load(i)
        composite, real, mask = sample["composite"], sample["real"], sample["mask"]
        found = sharpness_features(composite, mask)
        harmonizer.reset()
        correction = harmonizer.estimate(composite, mask)
        if found is None or correction.params is None:
            continue
        person = mask[..., None] > 0
        scores = []
        for candidate in (composite, np.where(person, unsharpen(composite), composite)):
            out = np.where(person, harmonizer.apply(correction, candidate, mask), composite)
            scores.append(image_metrics(out, real, mask)["psnr"])
        features.append(found)
        gains.append(scores[1] - scores[0])
    harmonizer.close()
    return np.array(features), np.array(gains)


def fit_logistic(x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1e-2,
                 steps: int = 50) -> tuple[np.ndarray, float]:
    """Weighted L2-regularised logistic regression by Newton's method: (weights, bias)."""
    design = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    theta = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], l2)
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(design @ theta, -50, 50)))
        grad = design.T @ (weight * (p - y)) + penalty * theta
        hess = (design * (weight * p * (1 - p))[:, None]).T @ design + np.diag(penalty) + 1e-9 * np.eye(len(theta))
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta[:-1], float(theta[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".pack/train"))
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("engine/weights/sharpness.json"))
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    features, gains = collect(args.data, args.split, args.limit)
    if len(features) < 20:
        raise SystemExit(f"error: only {len(features)} usable composites in {args.data}; need 20 or more")
    mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
    weights, bias = fit_logistic((features - mean) / std, (gains > 0).astype(float), np.abs(gains) + 0.05)
    decided = ((features - mean) / std @ weights + bias) > 0
    model = {"features": list(FEATURES), "mean": mean.tolist(), "weights": (weights / std).tolist(),
             "bias": bias, "factor": 4.0, "data": str(args.data), "composites": int(len(features)),
             "sharpened_share": float((gains > 0).mean()), "gain_db_if_always": float(gains.mean()),
             "gain_db_as_decided": float(np.where(decided, gains, 0).mean()),
             "gain_db_oracle": float(np.maximum(gains, 0).mean())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(model, indent=1) + "\n")
    print(json.dumps({k: v for k, v in model.items() if k not in ("mean", "weights")}, indent=1))
    return model


if __name__ == "__main__":
    main()
