"""Gallery templates: one vector per (identity, modality, model) from enrollment rows."""

from __future__ import annotations

import numpy as np

from modalities.base import l2_normalise


def build_templates(
    vectors: np.ndarray, quality: np.ndarray, labels: list[str] | np.ndarray
) -> tuple[list[str], np.ndarray]:
    """Quality-weighted mean of each label's unit rows, renormalised.

    Weights are floored so that an all-zero-quality identity still gets a template.
    """
    labels = np.asarray(labels)
    names = sorted(set(labels.tolist()))
    if not names:
        return [], np.zeros((0, vectors.shape[1] if vectors.ndim == 2 else 0), np.float32)
    unit = l2_normalise(vectors)
    weights = np.maximum(np.asarray(quality, np.float32), 1e-3)
    templates = np.stack(
        [(unit[labels == n] * weights[labels == n, None]).sum(axis=0) for n in names]
    )
    return names, l2_normalise(templates)
