"""Rule fusion of calibrated per-modality LLRs, with absent modalities masked (NaN).

Every rule passes a lone modality through unchanged, and ignores (never zero-fills) an
absent one. `sum` treats modalities as independent evidence, so its output is itself an LLR
and `open_set_threshold` applies to it. `weighted` and `quality` redistribute the evidence
among the modalities present: their weights are rescaled to sum to the number of present
modalities, so equal weights give the sum rule. `mean` and `max` are not LLRs; their
open-set threshold must be fitted on labelled data (`biofuse calibrate`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

Rule = Literal["sum", "mean", "max", "weighted", "quality"]
RULES: tuple[str, ...] = ("sum", "mean", "max", "weighted", "quality")
QUALITY_FLOOR = 1e-3  # a zero-quality sample still counts a little, so it is never dropped


def _stack(llrs: Sequence[np.ndarray]) -> np.ndarray:
    if not llrs:
        raise ValueError("nothing to fuse: no modality score tables")
    return np.stack([np.asarray(x, np.float64) for x in llrs])


def _all_absent(stack: np.ndarray) -> np.ndarray:
    return np.all(np.isnan(stack), axis=0)


def _weighted(stack: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Σ w'_m llr_m over present m, with w' = w * n_present / Σ_present w."""
    present = ~np.isnan(stack)
    w = np.where(present, weights, 0.0)
    total = w.sum(axis=0)
    n_present = present.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(total > 0, n_present / total, 0.0)
        fused = (np.where(present, stack, 0.0) * w).sum(axis=0) * scale
    fused[_all_absent(stack)] = np.nan
    return fused


def fuse_rule(
    llrs: Sequence[np.ndarray],
    rule: Rule = "sum",
    weights: Sequence[float] | None = None,
    qualities: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """Fuse M same-shaped (P, I) LLR tables by `rule`; NaN = absent.

    `weights` (one per modality, > 0) is required by `weighted`; `qualities` (one (P,) array
    per modality, the probe-side quality, NaN where absent) by `quality`.
    """
    stack = _stack(llrs)
    absent = _all_absent(stack)
    if rule == "sum":
        fused = np.nansum(stack, axis=0)
    elif rule in ("mean", "max"):
        with warnings.catch_warnings():  # all-absent cells warn; they are set to NaN below
            warnings.simplefilter("ignore", RuntimeWarning)
            fused = np.nanmean(stack, axis=0) if rule == "mean" else np.nanmax(stack, axis=0)
    elif rule == "weighted":
        if weights is None or len(weights) != len(stack):
            raise ValueError(f"the weighted rule needs {len(stack)} weights, one per modality")
        w = np.asarray(weights, np.float64)
        if (w <= 0).any():
            raise ValueError("modality weights must be > 0")
        return _weighted(stack, w.reshape(-1, *([1] * (stack.ndim - 1))))
    elif rule == "quality":
        if qualities is None or len(qualities) != len(stack):
            raise ValueError(f"the quality rule needs {len(stack)} quality arrays")
        q = np.stack([np.asarray(x, np.float64) for x in qualities])  # (M, P)
        q = np.maximum(np.nan_to_num(q, nan=QUALITY_FLOOR), QUALITY_FLOOR)
        return _weighted(stack, q.reshape(*q.shape, *([1] * (stack.ndim - 2))))
    else:
        raise ValueError(f"unknown fusion rule {rule!r}: use one of {', '.join(RULES)}")
    fused = np.asarray(fused, np.float64)
    fused[absent] = np.nan
    return fused
