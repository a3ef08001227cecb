"""The dlib face path on real LFW photos: detection, embedding, verification, track templates."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from biofuse.fusion.metrics import kfold_verification_accuracy
from biofuse.modalities.base import Embeddings, Extractor
from biofuse.modalities.face import (
    DLIB_SAME_PERSON_COS,
    DlibFaceDetector,
    DlibFaceEmbedder,
    FaceChip,
    FaceDetection,
    aggregate_track,
    largest_face,
    track_inliers,
)

from biofuse.registry import Registry

CENTRE_BOX = (70.0, 70.0, 180.0, 180.0)  # lfw-dev README's fallback when HOG finds no face


@pytest.fixture(scope="module")
def lfw(shared_data: Path) -> Path:
    root = shared_data / "lfw-dev"
    if not (root / "pairs.tsv").is_file():
        pytest.skip(f"lfw-dev not found at {root}")
    return root


@pytest.fixture(scope="module")
def face_models(
    lfw: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[DlibFaceDetector, DlibFaceEmbedder]:
    model = Registry(tmp_path_factory.mktemp("models")).resolve("dlib-resnet")
    detector, embedder = DlibFaceDetector(model), DlibFaceEmbedder(model)
    detector.prepare()
    embedder.prepare()
    return detector, embedder


def image_path(lfw: Path, name: str, idx: int) -> Path:
    return lfw / "images" / name / f"{name}_{idx:04d}.jpg"


def read_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def enrol_face(detector: DlibFaceDetector, path: Path) -> FaceDetection:
    """The benchmark's rule: largest HOG face, else the centre box."""
    rgb = read_rgb(path)
    (dets,) = detector.detect([rgb])
    return largest_face(dets) or detector.detect_in_box(rgb, CENTRE_BOX)


def embed_paths(
    face_models: tuple[DlibFaceDetector, DlibFaceEmbedder], paths: list[Path]
) -> Embeddings:
    detector, embedder = face_models
    faces = [enrol_face(detector, p) for p in paths]
    return embedder.embed(
        [FaceChip(str(p), f.chip, f.quality) for p, f in zip(paths, faces, strict=True)]
    )


def test_detects_one_face_with_sane_landmarks(lfw: Path, face_models) -> None:
    detector, _ = face_models
    rgb = read_rgb(image_path(lfw, "Tony_Blair", 1))
    (dets,) = detector.detect([rgb])
    assert len(dets) == 1
    face = dets[0]
    x0, y0, x1, y1 = face.box
    # LFW crops are centred on the face: the box centre is near the image centre.
    assert abs((x0 + x1) / 2 - 125) < 30 and abs((y0 + y1) / 2 - 125) < 30
    assert 60 < x1 - x0 < 200
    lm = face.landmarks5
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    assert (
        (lm[:, 0] > x0 - 5) & (lm[:, 0] < x1 + 5) & (lm[:, 1] > y0 - 5) & (lm[:, 1] < y1 + 5)
    ).all()
    eye_a, eye_b, nose = lm[0:2].mean(0), lm[2:4].mean(0), lm[4]
    assert nose[1] > max(eye_a[1], eye_b[1]) + 5  # the nose is below both eyes
    assert min(eye_a[0], eye_b[0]) < nose[0] < max(eye_a[0], eye_b[0])  # and between them
    assert face.inter_eye_px == pytest.approx(float(np.linalg.norm(eye_a - eye_b)), rel=1e-5)
    assert 20 < face.inter_eye_px < 80
    assert face.chip.shape == (150, 150, 3) and face.chip.dtype == np.uint8
    assert face.score > 0 and 0.5 < face.quality <= 1.0


def test_frame_without_a_face_gives_an_empty_list(face_models) -> None:
    detector, _ = face_models
    ramp = np.linspace(0, 255, 250, dtype=np.float32)
    blank = np.repeat(np.add.outer(ramp, ramp)[:, :, None] / 2, 3, axis=2).astype(np.uint8)
    assert detector.detect([blank]) == [[]]
    assert detector.detect([]) == []


def test_empty_batch_gives_empty_embeddings(face_models) -> None:
    _, embedder = face_models
    emb = embedder.embed([])
    assert len(emb) == 0 and emb.vectors.shape == (0, 128)
    assert emb.model_id == embedder.model_id and emb.model_id.startswith("dlib-resnet-")


def test_embedder_is_an_extractor_with_unit_rows(lfw: Path, face_models) -> None:
    _, embedder = face_models
    assert isinstance(embedder, Extractor)
    emb = embed_paths(face_models, [image_path(lfw, "Tony_Blair", i) for i in (1, 2)])
    assert emb.vectors.shape == (2, 128) and emb.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-5)
    assert (emb.extra["raw_norm"] > 0.5).all()
    assert (emb.quality > 0).all()


def test_sixty_lfw_pairs_verify_at_least_ninety_percent(lfw: Path, face_models) -> None:
    """Every 15th pair of pairs.tsv (30 genuine, 30 impostor, all three folds).

    Two-fold protocol inside the sample: the cosine threshold for even pairs is chosen on
    odd pairs and vice versa, so no threshold is tuned on the pairs it is scored on.
    """
    with open(lfw / "pairs.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))[::15]
    labels = np.array([int(r["same"]) for r in rows])
    assert labels.sum() == 30 and len(rows) == 60
    paths = sorted(
        {image_path(lfw, r["name1"], int(r["idx1"])) for r in rows}
        | {image_path(lfw, r["name2"], int(r["idx2"])) for r in rows}
    )
    emb = embed_paths(face_models, paths)
    row = {k: i for i, k in enumerate(emb.keys)}
    a = emb.vectors[[row[str(image_path(lfw, r["name1"], int(r["idx1"])))] for r in rows]]
    b = emb.vectors[[row[str(image_path(lfw, r["name2"], int(r["idx2"])))] for r in rows]]
    cosine = np.einsum("ij,ij->i", a, b)
    res = kfold_verification_accuracy(cosine, labels, np.arange(len(rows)) % 2)
    assert res.mean >= 0.9, (res.accuracies, res.thresholds)
    assert cosine[labels == 1].mean() > cosine[labels == 0].mean() + 0.05


def template_people(lfw: Path) -> list[str]:
    with open(lfw / "people.tsv", newline="") as handle:
        return sorted(
            r["name"] for r in csv.DictReader(handle, delimiter="\t") if r["template"] == "1"
        )


def test_track_template_rejects_frames_of_another_person(lfw: Path, face_models) -> None:
    """A track of 8 photos of one template person plus 2 of another (an identity switch)."""
    people = template_people(lfw)
    assert len(people) == 12
    owner, intruder = "Tony_Blair", "Laura_Bush"
    assert owner in people and intruder in people
    track = [image_path(lfw, owner, i) for i in range(1, 9)]
    track += [image_path(lfw, intruder, i) for i in (1, 2)]
    held_out = [image_path(lfw, owner, i) for i in range(10, 14)]
    emb = embed_paths(face_models, track + held_out)
    vectors, quality = emb.vectors[:10], emb.quality[:10]
    probes = emb.vectors[10:]

    keep = track_inliers(vectors, quality, DLIB_SAME_PERSON_COS)
    assert not keep[8:].any(), keep  # both intruder frames flagged
    assert keep[:8].sum() >= 7, keep  # the owner's frames kept (one odd photo tolerated)

    template, track_quality = aggregate_track(vectors, quality, DLIB_SAME_PERSON_COS)
    naive = vectors.mean(axis=0)
    naive /= np.linalg.norm(naive)
    assert np.linalg.norm(template) == pytest.approx(1.0, abs=1e-5)
    assert 0 < track_quality <= 1
    assert float((probes @ template).mean()) > float((probes @ naive).mean())
    # and the template is further from the intruder than the naive mean is
    assert (vectors[8:] @ template).mean() < (vectors[8:] @ naive).mean()


def test_aggregate_track_never_returns_nan() -> None:
    v = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [0.9, 0.1]], dtype=np.float32)
    q = np.array([0.0, 0.0, np.nan, 0.0], dtype=np.float32)  # no quality information at all
    template, quality = aggregate_track(v, q)
    assert np.isfinite(template).all() and np.linalg.norm(template) == pytest.approx(1.0)
    assert quality == 0.0
    with pytest.raises(ValueError):
        aggregate_track(np.zeros((0, 128), np.float32), np.zeros(0, np.float32))
    with pytest.raises(ValueError):
        aggregate_track(np.zeros((2, 4), np.float32), np.ones(2, np.float32))


def test_largest_face_picks_the_biggest_box() -> None:
    def det(side: float) -> FaceDetection:
        return FaceDetection(
            (0.0, 0.0, side, side),
            np.zeros((5, 2), np.float32),
            1.0,
            side / 3,
            np.zeros((150, 150, 3), np.uint8),
            0.9,
        )

    small, big = det(40), det(90)
    assert largest_face([small, big, det(60)]) is big
    assert largest_face([]) is None
