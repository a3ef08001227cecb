"""Fusion inside the flows: gallery migration across models and identify's fusion set-up,
on a real SQLite catalog and Zarr store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.context import Context
from biofuse.flows.gallery import fusion_setup, load_gallery, pick_cohort
from biofuse.flows.migrate import migrate_gallery
from biofuse.fusion.calibration import LinearCalibration
from biofuse.fusion.decide import OperatorCalibration
from biofuse.modalities.base import Embeddings, l2_normalise

from biofuse.catalog import Enrollment
from biofuse.errors import GalleryError, ModelMissingError

# declared models (scoring reads their declarations), with made-up weight digests
OLD, NEW = "dlib-resnet-aaaaaaaaaaaa", "adaface-ir50-bbbbbbbbbbbb"


def _rotation(dim: int, seed: int = 0) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return q


def _gallery(ctx: Context, rng: np.random.Generator, n_pairs: int) -> np.ndarray:
    """Two enrolled identities under OLD, plus `n_pairs` track rows stored under both models."""
    rot = _rotation(8)
    enrol = l2_normalise(rng.standard_normal((2, 8)))
    keys = ["enr:a", "enr:b"]
    ctx.store.commit("face", "enroll", Embeddings(enrol, np.ones(2, np.float32), keys, OLD))
    for name, key in zip(("alice", "bob"), keys, strict=True):
        person = ctx.catalog.identity(name, create=True)
        assert person is not None
        with ctx.catalog.session() as s:
            s.add(
                Enrollment(
                    identity_id=person.id,
                    media_path=f"{name}.jpg",
                    media_hash=name,
                    modality="face",
                    model_id=OLD,
                    store_key=key,
                    quality=1.0,
                )
            )
    tracks = l2_normalise(rng.standard_normal((n_pairs, 8)))
    tkeys = [f"v1:t{i}" for i in range(n_pairs)]
    ctx.store.commit("face", "v1", Embeddings(tracks, np.ones(n_pairs, np.float32), tkeys, OLD))
    ctx.store.commit(
        "face", "v1", Embeddings(tracks @ rot, np.ones(n_pairs, np.float32), tkeys, NEW)
    )
    return enrol @ rot


def test_migrated_gallery_matches_the_new_model(tmp_path: Path) -> None:
    ctx = Context.open(home=str(tmp_path / "home"))
    want = _gallery(ctx, np.random.default_rng(1), n_pairs=40)
    report = migrate_gallery(ctx, "face", OLD, NEW, method="procrustes")
    assert report["migrated"] == 2 and report["map"]["mean_cosine_after"] > 0.999
    names, templates = load_gallery(ctx, "face", NEW, snapshot=None)
    assert names == ["alice", "bob"]
    np.testing.assert_allclose(templates, want, atol=1e-4)
    keys = ctx.store.read("face", NEW).keys
    assert {"mig:enr:a", "mig:enr:b"} <= set(keys.tolist())
    assert migrate_gallery(ctx, "face", OLD, NEW, method="procrustes")["migrated"] == 0
    assert (tmp_path / "home" / "maps" / f"face_{OLD}_to_{NEW}.json").is_file()
    # the cohort is drawn from non-gallery rows only
    cohort = pick_cohort(ctx, "face", OLD, size=5)
    assert len(cohort) == 5
    enrolled = ctx.store.read("face", OLD, ["enr:a", "enr:b"]).vectors
    assert not any(np.allclose(c, e) for c in cohort for e in enrolled)


def test_migration_needs_enough_paired_samples(tmp_path: Path) -> None:
    ctx = Context.open(home=str(tmp_path / "home"))
    _gallery(ctx, np.random.default_rng(2), n_pairs=3)
    with pytest.raises(GalleryError, match="at least 10"):
        migrate_gallery(ctx, "face", OLD, NEW)


def test_fusion_setup_reads_the_operator_calibration(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ctx = Context.open(home=str(home))
    models = {"face": OLD}
    calibrations, args = fusion_setup(ctx, models, None)
    assert args == {"weights": {}, "method": "sum"}  # no file: defaults, prior threshold
    cal = LinearCalibration(7.0, -3.0, "operator")
    OperatorCalibration({"face": cal}, {"face": OLD}, "sum", threshold=4.2).save(
        home / "calibration.json"
    )
    calibrations, args = fusion_setup(ctx, models, None)
    assert calibrations["face"].slope == 7.0 and args["threshold_llr"] == 4.2
    with pytest.raises(GalleryError, match="refit"):
        fusion_setup(ctx, {"face": NEW}, None)
    # fitted on face alone: its calibration applies, its threshold (face-only fusion) does not
    calibrations, args = fusion_setup(
        ctx, {"face": OLD, "voice": "resemblyzer-ge2e-cccccccccccc"}, None
    )
    assert calibrations["face"].slope == 7.0 and "threshold_llr" not in args
    learned = Context.open(home=str(home), fusion_method="logistic")
    with pytest.raises(ModelMissingError, match="calibrate"):
        fusion_setup(learned, models, None)
