"""Do no harm, measured: the distribution of a harmonizer's gain over the composite, not only its mean.

A mean gain of several dB can hide a model that makes one composite in five worse, mostly the ones that
were nearly right already (a person whose light already fits the scene). Per image, the gain is the
output's PSNR minus the composite's own (both against the real photo); this module summarises a list of
such rows:

- the share of composites made worse (gain < 0) and by more than 1 dB, the worst gain;
- the mean gain per bucket of the composite's own PSNR (how far from right it was): < 20, 20-25, 25-30,
  >= 30 dB, with the share made worse in each;
- the same per group of photos (the file-name prefix: pixabay, hagrid, webcam, ...).

Pure functions over dicts (the rows trainer.evaluate writes), so a test can check them by hand.
"""

from __future__ import annotations

import math

#: Buckets of the composite's own PSNR: (label, low, high) with low <= psnr < high.
BUCKETS = (("< 20 dB", -math.inf, 20.0), ("20-25 dB", 20.0, 25.0), ("25-30 dB", 25.0, 30.0),
           (">= 30 dB", 30.0, math.inf))
#: A composite made worse by more than this (dB) is the failure a user sees at once.
VISIBLE_HARM_DB = 1.0


def group_of(name: str) -> str:
    """A row's photo group: its name's prefix before the first underscore (make_pack's naming)."""
    return str(name).split("_", 1)[0]


def gain_row(name: str, psnr_out: float, psnr_composite: float) -> dict:
    """One composite's row: its name, group, the composite's and the output's PSNR and the gain."""
    return {"name": name, "group": group_of(name), "psnr_composite": float(psnr_composite),
            "psnr": float(psnr_out), "gain": float(psnr_out) - float(psnr_composite)}


def summarize_gains(rows: list[dict]) -> dict:
    """count, mean gain, share worse (gain < 0), share worse by more than VISIBLE_HARM_DB, worst gain and
    the mean PSNR of the output and of the composite, for rows with 'gain', 'psnr', 'psnr_composite'."""
    if not rows:
        return {"count": 0}
    gains = [r["gain"] for r in rows]
    n = len(gains)
    return {"count": n, "mean_gain": sum(gains) / n,
            "share_worse": sum(g < 0 for g in gains) / n,
            "share_worse_1db": sum(g < -VISIBLE_HARM_DB for g in gains) / n,
            "worst_gain": min(gains), "best_gain": max(gains),
            "psnr": sum(r["psnr"] for r in rows) / n,
            "psnr_composite": sum(r["psnr_composite"] for r in rows) / n}


def gain_distribution(rows: list[dict]) -> dict:
    """{'all': summary, 'buckets': {label: summary}, 'groups': {group: summary}} (see summarize_gains)."""
    buckets = {label: summarize_gains([r for r in rows if lo <= r["psnr_composite"] < hi])
               for label, lo, hi in BUCKETS}
    groups = {g: summarize_gains([r for r in rows if r["group"] == g]) for g in sorted({r["group"] for r in rows})}
    return {"all": summarize_gains(rows), "buckets": buckets, "groups": groups}


def _line(label: str, s: dict) -> str:
    if not s.get("count"):
        return f"| {label} | 0 | – | – | – | – |"
    return (f"| {label} | {s['count']} | {s['mean_gain']:+.2f} dB | {100 * s['share_worse']:.1f} % | "
            f"{100 * s['share_worse_1db']:.1f} % | {s['worst_gain']:+.2f} dB |")


def format_distribution(dist: dict, title: str = "") -> str:
    """Markdown tables: all, per bucket of the composite's PSNR, per group."""
    head = "| {} | n | mean gain | made worse | worse by > 1 dB | worst |\n|---|---:|---:|---:|---:|---:|"
    out = [f"**{title}**", ""] if title else []
    out += [head.format("composite's own PSNR"), *(_line(k, v) for k, v in dist["buckets"].items()),
            _line("**all**", dist["all"]), "", head.format("group"),
            *(_line(k, v) for k, v in dist["groups"].items())]
    return "\n".join(out)


__all__ = ["BUCKETS", "VISIBLE_HARM_DB", "format_distribution", "gain_distribution", "gain_row", "group_of",
           "summarize_gains"]
