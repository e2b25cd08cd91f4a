"""The linear baseline: colour statistics of the person and the background -> one global 3x4 colour matrix.

    python -m trainer.linear --data .pack/train --out .pack/linear.json      # fit (about a minute)
    python -m trainer.evaluate --data .pack/heldout --model linear --linear .pack/linear.json

The cheapest harmonizer that works, reported next to every model so that each one is compared with it.
Features of a composite: per channel the mean, standard deviation and 5/25/50/75/95th percentiles of the
person (mask >= 0.5) and of the background (mask < 0.5), 42 numbers and a constant. Target: the best
global 3x4 matrix for that composite, fitted by least squares on the person against the ground truth.
A ridge regression maps features to the matrix's 12 numbers; applied, the matrix re-colours the person
and the soft mask blends it in, as the Harmonizer does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.colour_prior import IDENTITY  # rows r, g, b, 1; columns: output channels
from trainer.cli import run_main

PERCENTILES = (5, 25, 50, 75, 95)
FEATURES = 2 * 3 * (2 + len(PERCENTILES)) + 1


def _float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) / 255.0 if image.dtype == np.uint8 else image.astype(np.float64)


def _soft(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float64) / 255.0 if mask.dtype == np.uint8 else mask.astype(np.float64)


def colour_features(composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(FEATURES,) statistics of the person and of the background (see the module docstring).

    An empty region gets the other region's statistics (no information either way, no NaN)."""
    x = _float(composite).reshape(-1, 3)
    person = _soft(mask).reshape(-1) >= 0.5
    regions = [x[person], x[~person]]
    if not len(regions[0]):
        regions[0] = regions[1]
    if not len(regions[1]):
        regions[1] = regions[0]
    feats = []
    for values in regions:
        feats += [values.mean(0), values.std(0), *np.percentile(values, PERCENTILES, axis=0)]
    return np.concatenate([np.concatenate(feats), [1.0]])


def best_matrix(composite: np.ndarray, real: np.ndarray, mask: np.ndarray, lam: float = 1e-4) -> np.ndarray:
    """(4, 3) least-squares matrix with [r, g, b, 1] @ M ~ real on the person (identity if it is empty)."""
    person = _soft(mask).reshape(-1) >= 0.5
    if person.sum() < 4:
        return IDENTITY.copy()
    x = np.concatenate([_float(composite).reshape(-1, 3)[person], np.ones((int(person.sum()), 1))], axis=1)
    y = _float(real).reshape(-1, 3)[person]
    reg = lam * len(x) * np.eye(4)
    return np.linalg.solve(x.T @ x + reg, x.T @ y + reg @ IDENTITY)


def apply_matrix(matrix: np.ndarray, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 RGB: the person re-coloured by `matrix`, blended in through the soft mask."""
    x = _float(composite)
    corrected = np.clip(np.concatenate([x, np.ones(x.shape[:2] + (1,))], axis=2) @ matrix, 0, 1)
    m = _soft(mask)[..., None]
    return np.clip(np.round((m * corrected + (1 - m) * x) * 255), 0, 255).astype(np.uint8)


class LinearBaseline:
    """Ridge regression from colour_features to the 12 numbers of a global 3x4 matrix."""

    def __init__(self, weights: np.ndarray):
        weights = np.asarray(weights, np.float64)
        if weights.shape != (FEATURES, 12) or not np.isfinite(weights).all():
            raise ValueError(f"linear baseline weights must be finite ({FEATURES}, 12), got {weights.shape}")
        self.weights = weights

    @classmethod
    def fit(cls, features: np.ndarray, matrices: np.ndarray, lam: float = 1e-3) -> LinearBaseline:
        """Fit on (N, FEATURES) features and (N, 4, 3) best matrices; predicts the change from identity."""
        x = np.asarray(features, np.float64)
        y = (np.asarray(matrices, np.float64) - IDENTITY).reshape(len(x), 12)
        reg = lam * len(x) * np.eye(x.shape[1])
        reg[-1, -1] = 0.0  # the constant is not shrunk
        return cls(np.linalg.solve(x.T @ x + reg, x.T @ y))

    def matrix(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return IDENTITY + (colour_features(composite, mask) @ self.weights).reshape(4, 3)

    def harmonize(self, composite: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return apply_matrix(self.matrix(composite, mask), composite, mask)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model": "linear", "features": FEATURES,
                                    "weights": self.weights.tolist()}) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> LinearBaseline:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"linear baseline not found: {path} (fit it: python -m trainer.linear)")
        try:
            data = json.loads(path.read_text())
            return cls(np.array(data["weights"], np.float64))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a linear baseline file: {exc}") from None


def training_pairs(data: Path, per_image: int, seed: int, side: int, progress: bool = True):
    """(features, best matrices) from fresh FFHQH composites of the photos in a make_dataset directory."""
    from trainer.datasets import SynthesisDataset
    from trainer.make_dataset import photo_rng
    from trainer.recolor import composite as recolour

    source = SynthesisDataset(data, size=side, seed=seed, cache_side=side)
    feats, mats = [], []
    for stem, real, mask in tqdm(source.items, desc="linear fit", unit="photo", disable=not progress):
        rng = photo_rng(seed, stem)
        for _ in range(per_image):
            comp = recolour(real, mask, rng)
            feats.append(colour_features(comp, mask))
            mats.append(best_matrix(comp, real, mask))
    return np.array(feats), np.array(mats)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainer.linear", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True, help="make_dataset directory of training photos + masks")
    p.add_argument("--out", type=Path, required=True, help="where to write the fitted baseline (.json)")
    p.add_argument("--per-image", type=int, default=4, help="composites drawn per photo")
    p.add_argument("--side", type=int, default=256, help="photos shrunk to this longest side first")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    features, matrices = training_pairs(args.data, args.per_image, args.seed, args.side)
    path = LinearBaseline.fit(features, matrices).save(args.out)
    print(f"linear baseline fitted on {len(features)} composites -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_main(main))
