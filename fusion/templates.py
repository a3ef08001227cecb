"""Gallery templates: one vector per (identity, modality, model) from enrollment rows."""

from __future__ import annotations

import numpy as np
from biofuse.modalities.base import l2_normalise


def build_templates(
    vectors: np.ndarray,
    quality: np.ndarray,
    labels: list[str] | np.ndarray,
    metric: str = "cosine",
) -> tuple[list[str], np.ndarray]:
    """One template per label, in the space its model's `metric` compares in.

    cosine: quality-weighted mean of the unit rows, renormalised. mean-cosine (face models):
    the same mean, not renormalised, so that a unit probe's dot product with it is the
    probe's weighted mean cosine to the rows. Any other metric (e.g.
    the gait models' part-averaged Euclidean distance, see `biofuse.fusion.scores.metric_for_model`)
    compares raw rows, whose norms matter: the template is the quality-weighted mean of the
    raw rows, so it lies in the same space as the probe rows it is scored against.
    Weights are floored so that an all-zero-quality identity still gets a template.
    """
    labels = np.asarray(labels)
    names = sorted(set(labels.tolist()))
    if not names:
        return [], np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
    cosine = metric == "cosine"
    unit = cosine or metric == "mean-cosine"
    rows = l2_normalise(vectors) if unit else np.asarray(vectors, np.float32)
    weights = np.maximum(np.asarray(quality, np.float32), 1e-3)
    sums = np.stack([(rows[labels == n] * weights[labels == n, None]).sum(axis=0) for n in names])
    if cosine:
        return names, l2_normalise(sums)
    totals = np.array([weights[labels == n].sum() for n in names], np.float32)
    return names, (sums / totals[:, None]).astype(np.float32)
