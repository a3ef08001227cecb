"""Cross-model maps recover known transforms from paired embeddings."""

from __future__ import annotations

import numpy as np
import pytest
from biofuse.fusion.migrate import EmbeddingMap


def test_procrustes_recovers_a_rotation_by_hand() -> None:
    source = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    target = source @ np.array([[0.0, 1.0], [-1.0, 0.0]])  # +90 degrees
    m = EmbeddingMap("procrustes").fit(source, target)
    np.testing.assert_allclose(m.transform(np.array([[1.0, 0.0]])), [[0.0, 1.0]], atol=1e-6)
    assert m.report_["mean_cosine_before"] == pytest.approx(0.0)
    assert m.report_["mean_cosine_after"] == pytest.approx(1.0)


def test_ridge_maps_between_different_dimensions(tmp_path) -> None:
    rng = np.random.default_rng(0)
    source = rng.standard_normal((400, 16))
    source /= np.linalg.norm(source, axis=1, keepdims=True)
    target = source @ rng.standard_normal((16, 8))
    m = EmbeddingMap("ridge", alpha=1e-3, source_model="a", target_model="b").fit(source, target)
    assert m.report_["mean_cosine_after"] > 0.97 and m.report_["mean_cosine_before"] is None
    back = EmbeddingMap.load(m.save(tmp_path / "a_to_b"))
    np.testing.assert_allclose(back.transform(source[:5]), m.transform(source[:5]))
    assert back.source_model == "a" and back.target_model == "b"


def test_procrustes_refuses_unequal_dimensions() -> None:
    with pytest.raises(ValueError, match="ridge"):
        EmbeddingMap("procrustes").fit(np.ones((3, 4)), np.ones((3, 2)))
