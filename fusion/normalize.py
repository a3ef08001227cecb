"""Cohort score normalisation: z-norm, t-norm and adaptive s-norm.

A raw similarity means different things for different templates and probes (a face that
resembles many people scores high against everyone). Comparing each score with the scores of
the same template (z) or probe (t) against a cohort of people who are neither in the gallery
nor the probe removes that bias. s-norm averages both; adaptive s-norm uses only the `top_n`
cohort scores nearest to each side, the impostors that matter for a false match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from biofuse.fusion.scores import Metric, similarity

Method = Literal["none", "z", "t", "s"]
STD_FLOOR = 1e-6  # a cohort with identical scores would otherwise divide by zero


def cohort_stats(cohort_scores: np.ndarray, top_n: int | None = None) -> tuple[np.ndarray, ...]:
    """Mean and population std of each row's cohort scores (only its `top_n` highest if set)."""
    c = np.asarray(cohort_scores, np.float64)
    if c.ndim != 2 or c.shape[1] == 0:
        raise ValueError(f"cohort scores must be (rows, cohort) with a cohort, got {c.shape}")
    if top_n is not None:
        if top_n < 1:
            raise ValueError("top_n must be >= 1")
        c = -np.sort(-c, axis=1)[:, : min(top_n, c.shape[1])]
    return c.mean(axis=1), np.maximum(c.std(axis=1), STD_FLOOR)


def znorm(scores: np.ndarray, template_mean: np.ndarray, template_std: np.ndarray) -> np.ndarray:
    """(s - mean_t) / std_t, with each template's (column's) statistics against the cohort."""
    return (np.asarray(scores, np.float64) - template_mean[None, :]) / template_std[None, :]


def tnorm(scores: np.ndarray, probe_mean: np.ndarray, probe_std: np.ndarray) -> np.ndarray:
    """(s - mean_p) / std_p, with each probe's (row's) statistics against the cohort."""
    return (np.asarray(scores, np.float64) - probe_mean[:, None]) / probe_std[:, None]


def snorm(
    scores: np.ndarray,
    probe_stats: tuple[np.ndarray, np.ndarray],
    template_stats: tuple[np.ndarray, np.ndarray],
) -> np.ndarray:
    """Symmetric normalisation: the mean of z-norm and t-norm."""
    return 0.5 * (znorm(scores, *template_stats) + tnorm(scores, *probe_stats))


@dataclass
class CohortNormaliser:
    """Fit on the gallery templates and a cohort; transform score tables of new probes.

    Behaves like a scikit-learn transformer: parameters in the constructor, learned state
    (`template_stats_`) set by `fit`. NaN scores (absent evidence) stay NaN.
    """

    method: Method = "s"
    top_n: int | None = None  # adaptive: statistics over the top_n cohort scores per side
    metric: Metric = "cosine"
    cohort_: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    template_stats_: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def fit(self, templates: np.ndarray, cohort: np.ndarray) -> CohortNormaliser:
        if self.method != "none" and len(cohort) == 0:
            raise ValueError(f"{self.method}-norm needs a cohort; none was given")
        self.cohort_ = np.asarray(cohort)
        if self.method in ("z", "s"):
            self.template_stats_ = cohort_stats(
                similarity(templates, self.cohort_, self.metric), self.top_n
            )
        return self

    def transform(self, scores: np.ndarray, probe_vectors: np.ndarray) -> np.ndarray:
        """Normalise (P, I) `scores` of `probe_vectors` (P rows; rows of absent probes ignored)."""
        scores = np.asarray(scores, np.float64)
        if self.method == "none":
            return scores
        if self.method in ("z", "s") and self.template_stats_ is None:
            raise ValueError("call fit(templates, cohort) before transform")
        if self.method == "z":
            assert self.template_stats_ is not None
            return znorm(scores, *self.template_stats_)
        probe_stats = cohort_stats(similarity(probe_vectors, self.cohort_, self.metric), self.top_n)
        if self.method == "t":
            return tnorm(scores, *probe_stats)
        assert self.template_stats_ is not None
        return snorm(scores, probe_stats, self.template_stats_)


def choose_cohort(
    keys: np.ndarray | list[str], gallery_keys: set[str], size: int, seed: int = 0
) -> np.ndarray:
    """Row indices of up to `size` store rows that are not gallery (enrollment) rows.

    A seeded uniform draw, so the cohort (and every normalised score) is reproducible; the
    gallery's own rows are excluded because a template's mate in the cohort would inflate
    its z-norm statistics.
    """
    candidates = np.flatnonzero(~np.isin(np.asarray(keys, str), list(gallery_keys)))
    if len(candidates) <= size:
        return candidates
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=size, replace=False))
