"""Datasets: a fixed iHarmony4-layout set, and on-the-fly synthesis from photos + person masks.

Both return dicts of tensors: ``composite`` (3, H, W) and ``real`` (3, H, W) float32 RGB in [0, 1],
``mask`` (1, H, W) float32 in [0, 1] (soft, as MediaPipe gives at run time), and ``name``.

Randomness never comes from global state: each sample draws from ``numpy.random.default_rng((seed, epoch,
index))``. The same (seed, epoch, index) always gives the same sample in any process or worker, which is
what makes a resumed or multi-process run reproduce an uninterrupted one exactly.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from trainer import transforms as T
from trainer.recolor import DEFAULT_RECIPE, RecolorRecipe, composite


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot decode image: {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise ValueError(f"cannot decode mask: {path}")
    return mask.astype(np.float32) / 255.0


def to_tensors(sample: dict, name: str) -> dict:
    """NumPy HWC uint8 / HW float -> torch CHW float32 in [0, 1]."""
    out = {"name": name}
    for k, v in sample.items():
        if v.ndim == 3:
            out[k] = torch.from_numpy(np.ascontiguousarray(v.transpose(2, 0, 1))).float().div_(255.0)
        else:
            out[k] = torch.from_numpy(np.ascontiguousarray(v))[None].float()
    return out


def split_names(root: Path, split: str) -> list[str]:
    """Composite file names listed in ``root/*_<split>.txt`` (bare names or paths; iHarmony4 has both).

    Raises:
        FileNotFoundError: if ``root`` or the list is missing.
        ValueError: if the list is empty or ``split`` is not train/test.
    """
    root = Path(root)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"dataset directory not found: {root}")
    lists = sorted(root.glob(f"*_{split}.txt"))
    if not lists:
        raise FileNotFoundError(f"no *_{split}.txt list in {root} (expected the iHarmony4 layout)")
    names = [Path(line.strip()).name for f in lists for line in f.read_text().splitlines() if line.strip()]
    if not names:
        raise ValueError(f"{', '.join(str(f) for f in lists)}: empty {split} list")
    return names


class IHarmonyDataset(Dataset):
    """An iHarmony4-layout set (composite_images/, masks/, real_images/, *_train.txt / *_test.txt).

    Args:
        root: the set's directory.
        split: "train" or "test".
        size: output side (square), or None to keep the native size (batch size 1 then).
        train: random crop + flip (else the whole image resized).
        seed: base of the per-sample random streams.
    """

    def __init__(self, root: Path, split: str = "test", size: int | None = 256, train: bool = False,
                 seed: int = 0):
        self.root = Path(root)
        self.names = split_names(self.root, split)
        self.size, self.train, self.seed, self.epoch = size, train, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.names)

    def paths(self, index: int) -> tuple[Path, Path, Path]:
        """(composite, mask, real) paths of sample ``index``: NAME_k_j.jpg -> NAME_k.png, NAME.jpg."""
        name = self.names[index]
        stem = Path(name).stem
        mask_stem, real_stem = stem.rsplit("_", 1)[0], stem.rsplit("_", 2)[0]
        return (self.root / "composite_images" / name, self.root / "masks" / f"{mask_stem}.png",
                self.root / "real_images" / f"{real_stem}.jpg")

    def load(self, index: int) -> dict:
        """Native-size NumPy sample (composite, mask, real)."""
        comp_p, mask_p, real_p = self.paths(index)
        sample = {"composite": read_rgb(comp_p), "mask": read_mask(mask_p), "real": read_rgb(real_p)}
        h, w = sample["composite"].shape[:2]
        for k in ("mask", "real"):  # iHarmony4 has a few off-by-one sizes; follow the composite
            if sample[k].shape[:2] != (h, w):
                sample[k] = cv2.resize(sample[k], (w, h), interpolation=cv2.INTER_LINEAR)
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        if self.size is not None:
            if self.train:
                rng = np.random.default_rng([self.seed, self.epoch, index])
                sample = T.train_transform(sample, self.size, rng)
            else:
                sample = T.eval_transform(sample, self.size)
        return to_tensors(sample, Path(self.names[index]).stem)


class SynthesisDataset(Dataset):
    """Fresh FFHQH composites every epoch from photos and their person masks.

    Reads an iHarmony4-layout directory's ``real_images/NAME.jpg`` and ``masks/NAME_1.png`` (what
    ``trainer.make_dataset`` writes; its composites are ignored) or a list of (photo, mask) paths. Photos
    are decoded once and kept in memory, shrunk to ``cache_side``: crops are then cheap and the number of
    photos is small. Each item: a random crop/flip to size×size (or to recolor_side×recolor_side, then
    shrunk to size after the re-colouring), then the person re-coloured and pasted back, all drawn from
    (seed, epoch, index).

    Raises:
        FileNotFoundError: if the directory or its real_images/ is missing.
        ValueError: if no photo has a mask.
    """

    def __init__(self, root: Path, size: int = 256, seed: int = 0, split: str | None = None,
                 recipe: RecolorRecipe = DEFAULT_RECIPE, cache_side: int | None = 512,
                 scale: tuple[float, float] = (0.5, 1.0), recolor_side: int | None = None):
        root = Path(root)
        if not (root / "real_images").is_dir():
            raise FileNotFoundError(f"synthesis source needs {root}/real_images and masks/ (make_dataset output)")
        if split is not None:
            stems = sorted({n.rsplit(".", 1)[0].rsplit("_", 2)[0] for n in split_names(root, split)})
        else:
            stems = sorted(p.stem for p in (root / "real_images").glob("*.jpg"))
        self.items = []
        for stem in stems:
            mask_p = root / "masks" / f"{stem}_1.png"
            if mask_p.is_file():
                real = read_rgb(root / "real_images" / f"{stem}.jpg")
                mask = read_mask(mask_p)
                if mask.shape != real.shape[:2]:
                    mask = cv2.resize(mask, (real.shape[1], real.shape[0]), interpolation=cv2.INTER_LINEAR)
                if cache_side and max(real.shape[:2]) > cache_side:
                    s = cache_side / max(real.shape[:2])
                    dsize = (max(1, round(real.shape[1] * s)), max(1, round(real.shape[0] * s)))
                    real = cv2.resize(real, dsize, interpolation=cv2.INTER_AREA)
                    mask = cv2.resize(mask, dsize, interpolation=cv2.INTER_AREA)
                self.items.append((stem, real, mask))
        if not self.items:
            raise ValueError(f"no photo with a masks/NAME_1.png in {root}")
        if recolor_side is not None and recolor_side < size:
            raise ValueError(f"recolor_side must be at least the training size {size}, got {recolor_side}")
        self.size, self.seed, self.recipe, self.scale, self.epoch = size, seed, recipe, scale, 0
        self.recolor_side = recolor_side or size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        stem, real, mask = self.items[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = T.train_transform({"real": real, "mask": mask}, self.recolor_side, rng, scale=self.scale)
        sample["composite"] = composite(sample["real"], sample["mask"], rng, self.recipe)
        if self.recolor_side != self.size:
            # Re-coloured above the training size and then shrunk, as the Harmonizer shrinks a camera frame
            # or a photo: the recipe's 3x3 sharpening and posterizing then reach the network as they do at
            # run time (mostly averaged away), and the network does not learn to flatten texture to undo
            # a sharpening that, at full resolution, lives in finer detail than its cells.
            sample = T.resize(sample, self.size, self.size)
        return to_tensors(sample, stem)


class PriorCorrected(Dataset):
    """Another dataset's samples with the person re-coloured by the colour prior (engine.colour_prior),
    as engine.Harmonizer does before the network runs: a network trained or judged on these learns what
    is left after the prior. ``real`` and ``mask`` are unchanged; ``original`` is the composite before
    (what a grid of results shows)."""

    def __init__(self, dataset, prior):
        self.dataset, self.prior = dataset, prior

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __getattr__(self, name):  # names, items, ... of the wrapped set
        if name in ("dataset", "prior"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict:
        from engine.colour_prior import recolour

        sample = dict(self.dataset[index])
        image = sample["composite"].permute(1, 2, 0).numpy()
        mask = sample["mask"][0].numpy()
        corrected = recolour(image, mask, self.prior.matrix(image, mask))
        sample["original"] = sample["composite"]
        sample["composite"] = torch.from_numpy(np.ascontiguousarray(corrected.transpose(2, 0, 1)))
        return sample
