"""Per-modality score tables: similarity of each probe to each gallery identity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from biofuse.modalities.base import l2_normalise

Metric = Literal["cosine", "mean-cosine", "gait-euclidean"]
GAIT_PARTS = 16  # GaitBase's horizontal parts: store rows are [channels, parts] flattened C-order
# Each model's metric is declared in its registry entry (`ModelSpec.metric`). Face models
# declare "mean-cosine": a probe scores its quality-weighted mean cosine to the identity's
# enrolled rows, the score their calibrations were fitted on (one image against one image,
# fusion/default_calibration.json). The cosine to the renormalised mean of the rows is that
# mean divided by the mean's norm (0.98 for three dlib photos of one person): it lifts every
# score, impostors' too, by ~0.02, which dlib's slope of ~100 turns into +2 LLR and an
# unenrolled face named in a one-person gallery (issue 18, item 14).


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


def gait_scores(probes: np.ndarray, templates: np.ndarray, parts: int = GAIT_PARTS) -> np.ndarray:
    """(P, I) minus GaitBase's distance: the Euclidean distance of each part, averaged over parts.

    Rows are `[channels, parts]` flattened; same formula as OpenGait's evaluator (and
    `biofuse.modalities.gait.gaitbase.gait_distance`), in numpy so that fusion needs no torch.
    Negated so that, like every score here, higher means more similar.
    """
    p = np.asarray(probes, np.float64)
    t = np.asarray(templates, np.float64)
    if len(p) == 0 or len(t) == 0:
        return np.zeros((len(p), len(t)), np.float32)
    if p.shape[1] % parts or p.shape[1] != t.shape[1]:
        raise ValueError(f"gait rows of {p.shape[1]} and {t.shape[1]} values, {parts} parts each")
    x = p.reshape(len(p), -1, parts).transpose(2, 0, 1)  # [parts, P, c]
    y = t.reshape(len(t), -1, parts).transpose(2, 0, 1)
    sq = (x**2).sum(-1)[:, :, None] + (y**2).sum(-1)[:, None, :] - 2 * x @ y.transpose(0, 2, 1)
    return -np.sqrt(np.maximum(sq, 0.0)).mean(axis=0).astype(np.float32)


def mean_cosine_scores(probes: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """(P, I) cosine of each unit probe to each template left unnormalised.

    With `build_templates(..., metric="mean-cosine")` templates (the weighted mean of an
    identity's unit rows) this is the probe's weighted mean cosine to those rows.
    """
    if len(probes) == 0 or len(templates) == 0:
        return np.zeros((len(probes), len(templates)), np.float32)
    return (l2_normalise(probes) @ np.asarray(templates, np.float32).T).astype(np.float32)


def similarity(probes: np.ndarray, templates: np.ndarray, metric: Metric = "cosine") -> np.ndarray:
    """(P, I) similarity under the modality's metric (higher = more similar)."""
    if metric == "cosine":
        return cosine_scores(probes, templates)
    if metric == "mean-cosine":
        return mean_cosine_scores(probes, templates)
    if metric == "gait-euclidean":
        return gait_scores(probes, templates)
    raise ValueError(
        f"unknown similarity metric {metric!r}: use 'cosine', 'mean-cosine' or 'gait-euclidean'"
    )


def metric_for_model(model_id: str) -> Metric:
    """The similarity a model's embeddings are meant to be compared with: its declaration's.

    A model without a registry declaration is an error, never silently cosine.
    """
    from biofuse.registry import spec_for

    return spec_for(model_id).metric  # type: ignore[return-value]  # checked against METRICS


def score_modality(
    modality: str,
    model_id: str,
    probe_keys: list[str],
    evidence: dict[str, tuple[np.ndarray, float]],
    identities: list[str],
    templates: np.ndarray,
    metric: Metric = "cosine",
) -> ModalityScores:
    """Scores for every probe in `probe_keys`; probes missing from `evidence` get NaN rows."""
    scores = np.full((len(probe_keys), len(identities)), np.nan, np.float32)
    quality = np.full(len(probe_keys), np.nan, np.float32)
    present = [i for i, k in enumerate(probe_keys) if k in evidence]
    if present and len(identities):
        vectors = np.stack([evidence[probe_keys[i]][0] for i in present])
        scores[present] = similarity(vectors, templates, metric)
        quality[present] = [evidence[probe_keys[i]][1] for i in present]
    return ModalityScores(modality, model_id, list(probe_keys), list(identities), scores, quality)
