"""Cohort normalisation and similarity metrics on hand-worked numbers."""

from __future__ import annotations

import numpy as np
import pytest
from biofuse.fusion.normalize import (
    CohortNormaliser,
    choose_cohort,
    cohort_stats,
    snorm,
    tnorm,
    znorm,
)
from biofuse.fusion.scores import gait_scores, score_modality, similarity

from biofuse.errors import ModelMissingError


def test_cohort_stats_use_population_std_and_the_top_n() -> None:
    mean, std = cohort_stats(np.array([[0.1, 0.2, 0.3]]))
    np.testing.assert_allclose(mean, [0.2])
    np.testing.assert_allclose(std, [np.sqrt(0.02 / 3)])  # ((.1)^2 + 0 + (.1)^2) / 3
    mean, std = cohort_stats(np.array([[0.1, 0.5, 0.3]]), top_n=2)  # keeps 0.5 and 0.3
    np.testing.assert_allclose(mean, [0.4])
    np.testing.assert_allclose(std, [0.1])


def test_z_t_and_s_norm_by_hand() -> None:
    scores = np.array([[0.5, 0.1]])
    z = znorm(scores, np.array([0.2, 0.0]), np.array([0.1, 0.05]))
    np.testing.assert_allclose(z, [[3.0, 2.0]])
    t = tnorm(scores, np.array([0.3]), np.array([0.2]))
    np.testing.assert_allclose(t, [[1.0, -1.0]])
    s = snorm(
        scores, (np.array([0.3]), np.array([0.2])), (np.array([0.2, 0.0]), np.array([0.1, 0.05]))
    )
    np.testing.assert_allclose(s, [[2.0, 0.5]])


def test_normaliser_against_a_two_person_cohort() -> None:
    templates = np.array([[1.0, 0.0]])
    cohort = np.array([[1.0, 0.0], [0.0, 1.0]])  # template vs cohort: cos 1, 0 -> mean .5 sd .5
    probes = np.array([[0.0, 1.0], [np.nan, np.nan]])  # probe vs cohort: 0, 1 -> mean .5 sd .5
    raw = np.array([[0.0], [np.nan]])  # probe 2 has no evidence
    for method, want in (("z", -1.0), ("t", -1.0), ("s", -1.0), ("none", 0.0)):
        norm = CohortNormaliser(method).fit(templates, cohort)  # type: ignore[arg-type]
        out = norm.transform(raw, probes)
        np.testing.assert_allclose(out[0], [want])
        assert np.isnan(out[1, 0])  # absent stays absent


def test_normaliser_needs_a_cohort_and_a_fit() -> None:
    with pytest.raises(ValueError, match="cohort"):
        CohortNormaliser("s").fit(np.ones((1, 2)), np.zeros((0, 2)))
    with pytest.raises(ValueError, match="fit"):
        CohortNormaliser("z").transform(np.zeros((1, 1)), np.ones((1, 2)))


def test_choose_cohort_skips_gallery_rows_and_is_seeded() -> None:
    keys = ["a", "b", "c", "d", "e"]
    np.testing.assert_array_equal(choose_cohort(keys, {"b"}, size=10), [0, 2, 3, 4])
    picked = choose_cohort(keys, {"b"}, size=2, seed=3)
    assert len(picked) == 2 and 1 not in picked
    np.testing.assert_array_equal(picked, choose_cohort(keys, {"b"}, size=2, seed=3))


def test_gait_score_is_minus_the_mean_part_distance() -> None:
    # one channel, two parts: probe parts (3, 0), template parts (0, 4): distances 3 and 4
    np.testing.assert_allclose(
        gait_scores(np.array([[3.0, 0.0]]), np.array([[0.0, 4.0]]), 2), [[-3.5]]
    )


def test_gait_score_matches_gaitbase_distance() -> None:
    torch = pytest.importorskip("torch")
    from biofuse.modalities.gait.gaitbase import gait_distance

    rng = np.random.default_rng(0)
    p, g = rng.standard_normal((3, 8, 16)), rng.standard_normal((4, 8, 16))
    want = -gait_distance(torch.tensor(p), torch.tensor(g)).numpy()
    np.testing.assert_allclose(gait_scores(p.reshape(3, -1), g.reshape(4, -1)), want, rtol=1e-5)


def test_score_modality_takes_the_metric() -> None:
    t = score_modality(
        "gait",
        "m",
        ["a", "b"],
        {"a": (np.array([3.0] * 16 + [0.0] * 16), 1.0)},
        ["x"],
        np.array([[0.0] * 16 + [4.0] * 16]),
        metric="gait-euclidean",
    )
    # rows are [2 channels, 16 parts]: every part is (3, 0) vs (0, 4), distance 5
    np.testing.assert_allclose(t.scores[0], [-5.0], rtol=1e-6)
    assert np.isnan(t.scores[1]).all()
    with pytest.raises(ValueError, match="metric"):
        similarity(np.ones((1, 2)), np.ones((1, 2)), "manhattan")  # type: ignore[arg-type]


def test_gait_models_are_compared_by_part_distance() -> None:
    from biofuse.fusion.scores import metric_for_model

    assert metric_for_model("gaitbase-casiab-0123456789ab") == "gait-euclidean"
    assert metric_for_model("gei-pca-lda-casiab-0123456789ab") == "cosine"
    assert metric_for_model("dlib-resnet-0123456789ab") == "mean-cosine"
    # a model without a declaration has no metric: an error, not a silent cosine (issue 13)
    with pytest.raises(ModelMissingError, match="no registry declaration"):
        metric_for_model("never-heard-of-0123456789ab")
