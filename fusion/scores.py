"""Per-modality score tables: similarity of each probe to each gallery identity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from modalities.base import l2_normalise


@dataclass(frozen=True)
class ModalityScores:
    """Scores of probes (rows) against identities (columns) for one modality and model.

    A probe without evidence for this modality has a NaN row: absent, never zero.
    """

    modality: str
    model_id: str
    probes: list[str]
    identities: list[str]
    scores: np.ndarray  # (P, I) float, NaN where the probe has no evidence
    quality: np.ndarray  # (P,) probe-side quality, NaN where absent


def cosine_scores(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(P, I) cosine similarity between probe vectors and identity templates."""
    if len(probes) == 0 or len(templates) == 0:
        return np.zeros((len(probes), len(templates)), np.float32)
    return l2_normalise(probes) @ l2_normalise(templates).T


def score_modality(
    modality: str,
    model_id: str,
    probe_keys: list[str],
    evidence: dict[str, tuple[np.ndarray, float]],
    identities: list[str],
    templates: np.ndarray,
) -> ModalityScores:
    """Scores for every probe in `probe_keys`; probes missing from `evidence` get NaN rows."""
    scores = np.full((len(probe_keys), len(identities)), np.nan, np.float32)
    quality = np.full(len(probe_keys), np.nan, np.float32)
    present = [i for i, k in enumerate(probe_keys) if k in evidence]
    if present and len(identities):
        vectors = np.stack([evidence[probe_keys[i]][0] for i in present])
        scores[present] = cosine_scores(vectors, templates)
        quality[present] = [evidence[probe_keys[i]][1] for i in present]
    return ModalityScores(modality, model_id, list(probe_keys), list(identities), scores, quality)
