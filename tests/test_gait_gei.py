"""The gait default (GEI + PCA + LDA): committed weights, real CASIA-B sequences, training.

casiab-dev holds test-range subjects (075-080) the committed model never saw in training.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.models import build_model
from biofuse.modalities.base import Extractor
from biofuse.modalities.gait.casiab import SequenceLabel, cosine_similarity, rank1_table
from biofuse.modalities.gait.gei import (
    FULL_QUALITY_FRAMES,
    GeiGaitExtractor,
    GeiPcaLda,
    gait_energy_image,
    usable_frames,
)
from biofuse.modalities.items import SilhouetteSequence

from biofuse.config import Settings
from biofuse.errors import ModelMissingError
from biofuse.registry import Registry

WEIGHTS = Path(__file__).resolve().parents[1] / "modalities" / "gait" / "weights"
SUBJECTS = ("075", "076", "077", "078", "079", "080")
CONDITIONS = ("nm-01", "nm-02", "nm-05", "bg-01", "cl-01")


@pytest.fixture(scope="module")
def casiab_dev(shared_data: Path) -> dict[tuple[str, str, str], SilhouetteSequence]:
    """(subject, condition, view) -> sequence, for the 60 two-view casiab-dev sequences."""
    root = shared_data / "casiab-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    out = {}
    for s in SUBJECTS:
        for c in CONDITIONS:
            for v in ("054", "090"):
                with open(root / s / c / v / f"{v}.pkl", "rb") as handle:
                    frames = pickle.load(handle)  # the data README's loader: one ndarray
                out[s, c, v] = SilhouetteSequence(f"{s}/{c}/{v}", frames)
    return out


@pytest.fixture(scope="module")
def extractor(tmp_path_factory: pytest.TempPathFactory) -> GeiGaitExtractor:
    registry = Registry(tmp_path_factory.mktemp("models"))
    gei = GeiGaitExtractor(registry.resolve("gei-pca-lda-casiab"))
    gei.prepare()
    return gei


def test_committed_weights_load_through_the_registry_with_their_report(
    extractor: GeiGaitExtractor,
) -> None:
    weights = WEIGHTS / "gei-pca-lda-casiab.npz"
    report = json.loads((WEIGHTS / "gei-pca-lda-casiab.json").read_text())
    assert isinstance(extractor, Extractor)
    assert extractor.model.paths["weights"].resolve() == weights.resolve()
    assert extractor.model_id.startswith("gei-pca-lda-casiab-")
    assert weights.stat().st_size <= 20 * 2**20
    assert extractor.dim == report["lda_dim"] <= 73  # LDA: at most classes - 1
    assert report["subjects"] == "001-074" and report["sequences"] == 8107
    assert len(report["data_sha256"]) == 64
    with np.load(weights, allow_pickle=False) as z:
        assert {k: z[k].dtype for k in z.files} == dict.fromkeys(
            ("pca_mean", "pca_basis", "lda_projection"), np.dtype("float32")
        )
        assert z["pca_basis"].shape == (64 * 44, report["pca_dim"])


def test_unseen_subjects_are_closest_to_their_own_gallery_sequences(
    extractor: GeiGaitExtractor, casiab_dev: dict
) -> None:
    keys = list(casiab_dev)
    rows = extractor.embed([casiab_dev[k] for k in keys])
    assert rows.keys == [casiab_dev[k].key for k in keys]
    assert rows.vectors.shape == (60, extractor.dim) and rows.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(rows.vectors, axis=1), 1.0, atol=1e-5)
    vec = dict(zip(keys, rows.vectors))
    # Same view, normal walking: every probe nm-05 finds its own subject among nm-01/nm-02.
    for view in ("054", "090"):
        gallery = np.stack([vec[s, c, view] for s in SUBJECTS for c in ("nm-01", "nm-02")])
        owner = np.repeat(np.arange(len(SUBJECTS)), 2)
        for i, s in enumerate(SUBJECTS):
            assert owner[np.argmax(gallery @ vec[s, "nm-05", view])] == i, (s, view)
    # One named pair: 075's probe is closer to 075's gallery sequence than to 076's.
    probe = vec["075", "nm-05", "090"]
    assert probe @ vec["075", "nm-01", "090"] > probe @ vec["076", "nm-01", "090"] + 0.1


def test_the_gei_model_is_built_by_the_model_layer(tmp_path: Path, casiab_dev: dict) -> None:
    model = build_model("gait", Settings(home=tmp_path, gait_model="gei-pca-lda-casiab"))
    assert model.model_id.startswith("gei-pca-lda-casiab-")
    rows = model.embed([casiab_dev["077", "nm-01", "090"]])
    assert rows.keys == ["077/nm-01/090"] and rows.vectors.shape == (1, model.dim)
    with pytest.raises(ModelMissingError, match="'gaitset' is not a gait model"):
        build_model("gait", Settings(home=tmp_path, gait_model="gaitset"))


def test_quality_grows_with_sequence_length_and_segmentation_quality(
    extractor: GeiGaitExtractor, casiab_dev: dict
) -> None:
    frames = casiab_dev["080", "nm-01", "090"].frames
    assert len(frames) >= FULL_QUALITY_FRAMES
    items = [
        SilhouetteSequence("short", frames[:6]),
        SilhouetteSequence("long", frames),
        SilhouetteSequence("long-noisy", frames, quality=0.5),
    ]
    q = dict(zip(*(lambda e: (e.keys, e.quality))(extractor.embed(items))))
    assert q["short"] == pytest.approx(6 / FULL_QUALITY_FRAMES)
    assert q["long"] == pytest.approx(1.0) and q["long-noisy"] == pytest.approx(0.5)


def test_empty_frames_are_dropped_and_an_empty_track_gives_no_row(
    extractor: GeiGaitExtractor, casiab_dev: dict
) -> None:
    frames = casiab_dev["078", "nm-02", "054"].frames
    blank = np.zeros((5, 64, 64), np.uint8)
    padded = SilhouetteSequence("padded", np.concatenate([blank, frames, blank]))
    rows = extractor.embed(
        [padded, SilhouetteSequence("plain", frames), SilhouetteSequence("blank", blank)]
    )
    assert rows.keys == ["padded", "plain"]
    np.testing.assert_allclose(rows.vectors[0], rows.vectors[1], atol=1e-6)
    assert len(extractor.embed([SilhouetteSequence("blank", blank)])) == 0
    with pytest.raises(ValueError, match=r"expected \(T, 64, 64\)"):
        extractor.embed([SilhouetteSequence("bad", np.zeros((4, 64, 44), np.uint8))])


def test_gait_energy_image_is_the_mean_of_the_centre_cut(casiab_dev: dict) -> None:
    frames = casiab_dev["076", "nm-01", "090"].frames
    gei = gait_energy_image(usable_frames(SilhouetteSequence("x", frames)))
    assert gei.shape == (64 * 44,) and gei.min() >= 0.0 and gei.max() <= 1.0
    np.testing.assert_allclose(
        gei.reshape(64, 44), frames[:, :, 10:54].mean(axis=0) / 255.0, atol=1e-6
    )


def test_training_on_a_tiny_subset_is_deterministic_and_separates_its_subjects(
    casiab_dev: dict, tmp_path: Path
) -> None:
    keys = [k for k in casiab_dev if k[1] != "nm-05"]
    geis = np.stack([gait_energy_image(usable_frames(casiab_dev[k])) for k in keys])
    subjects = [k[0] for k in keys]
    first = GeiPcaLda.fit(geis, subjects, pca_dim=20, lda_dim=5)
    second = GeiPcaLda.fit(geis, subjects, pca_dim=20, lda_dim=5)
    for name in ("pca_mean", "pca_basis", "lda_projection"):
        assert np.array_equal(getattr(first, name), getattr(second, name)), name
    assert first.pca_basis.shape == (64 * 44, 20) and first.dim == 5
    np.testing.assert_allclose(first.pca_basis.T @ first.pca_basis, np.eye(20), atol=1e-5)
    path = tmp_path / "tiny.npz"
    first.save(path)
    assert np.array_equal(GeiPcaLda.load(path).project(geis), first.project(geis))
    # The held-out nm-05 sequences land nearest their own subject's training sequences.
    probes = [k for k in casiab_dev if k[1] == "nm-05"]
    probe_rows = first.project(
        np.stack([gait_energy_image(usable_frames(casiab_dev[k])) for k in probes])
    )
    nearest = np.argmax(probe_rows @ first.project(geis).T, axis=1)
    hits = np.mean([subjects[j] == k[0] for j, k in zip(nearest, probes)])
    assert hits >= 10 / 12
    with pytest.raises(ValueError, match="at least 2 subjects"):
        GeiPcaLda.fit(geis[:3], ["075"] * 3, 2, 1)


def test_broken_weight_files_are_model_missing_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.npz"
    text.write_text("not weights")
    with pytest.raises(ModelMissingError, match="gait_train_gei.py"):
        GeiPcaLda.load(text)
    odd = tmp_path / "odd.npz"
    np.savez(
        odd, pca_mean=np.zeros(10), pca_basis=np.zeros((10, 3)), lda_projection=np.zeros((3, 2))
    )
    with pytest.raises(ModelMissingError, match="inconsistent shapes"):
        GeiPcaLda.load(odd)


def test_protocol_excludes_the_identical_view_and_averages_over_probe_views() -> None:
    """A model right only within a view scores 0 cross-view and 100 on the identical view."""
    views = ("000", "018", "036", "054", "072", "090", "108", "126", "144", "162", "180")
    subjects = [f"{i:03d}" for i in range(75, 80)]
    labels, vectors = [], []
    for s_i, s in enumerate(subjects):
        for condition in ("nm-01", "nm-02", "nm-03", "nm-04", "nm-05", "bg-01", "cl-01"):
            for v_i, v in enumerate(views):
                labels.append(SequenceLabel(s, condition, v))
                # identity code rotated by the view: matches only within one view
                vec = np.zeros(len(subjects) * len(views))
                vec[v_i * len(subjects) + (s_i + v_i) % len(subjects)] = 1.0
                vectors.append(vec)
    result = rank1_table(np.array(vectors), labels, cosine_similarity)
    for condition in ("NM", "BG", "CL"):
        assert result.identical_view[condition] == pytest.approx(100.0)
        # cross-view similarities are all 0: ties, ranked pessimistically (a miss)
        assert result.rank1[condition] == pytest.approx(0.0)
        assert result.tables[condition].shape == (11, 11)
    identity = np.array([[float(s == t) for t in subjects] for s in subjects])
    same = rank1_table(
        np.array([identity[subjects.index(lab.subject)] for lab in labels]),
        labels,
        cosine_similarity,
    )
    assert same.rank1 == {"NM": 100.0, "BG": 100.0, "CL": 100.0}
