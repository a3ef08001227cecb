"""The nightly gallery rebuild on a real catalog, store and face model (LFW photos).

One module-scoped home is enrolled once; each test works on its own copy.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from biofuse.flows.actors import ModelHandle
from biofuse.flows.context import Context
from biofuse.flows.gallery import enroll_media, load_gallery
from biofuse.flows.rebuild import (
    GallerySnapshot,
    cohort_statistics,
    current_gallery,
    enrollment_pairs,
    rebuild,
)
from biofuse.fusion.scores import cosine_scores
from sqlalchemy import delete, select

from biofuse.catalog import Enrollment, GalleryVersion, Identity

OLD_MODEL = "dlib-resnet-000000000000"


def _photos(shared: Path, name: str, start: int, n: int) -> list[Path]:
    return sorted((shared / "lfw-dev" / "images" / name).glob("*.jpg"))[start : start + n]


def _old_model(real: ModelHandle) -> ModelHandle:
    """A stand-in for last year's weights: the same detections, another embedding space."""
    rotation = np.linalg.qr(np.random.default_rng(0).normal(size=(128, 128)))[0]

    def call(images):  # type: ignore[no-untyped-def]
        frames = real(images)
        for f in frames:
            f.vectors = (f.vectors @ rotation).astype(np.float32)
        return frames

    return ModelHandle("face", OLD_MODEL, call)


def _open(home: Path, face: ModelHandle | None = None, **overrides: object) -> Context:
    ctx = Context.open(home=str(home), modalities=["face"], **overrides)
    if face is not None:
        ctx.handles["face"] = face
    return ctx


@pytest.fixture(scope="module")
def face_handle() -> ModelHandle:
    from biofuse.flows.actors import local_handle

    from biofuse.config import load_settings

    return local_handle("face", load_settings(modalities=["face"]))


@pytest.fixture(scope="module")
def enrolled_home(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path, face_handle: ModelHandle
) -> Path:
    """Blair and Chavez enrolled with the current model, Chirac only with the 'old' one."""
    if not (shared_data / "lfw-dev" / "images").is_dir():
        pytest.skip("../shared/data/lfw-dev is absent")
    home = tmp_path_factory.mktemp("enrolled") / "home"
    ctx = _open(home, face_handle)
    for name in ("Tony_Blair", "Hugo_Chavez"):
        for photo in _photos(shared_data, name, 0, 3):
            enroll_media(ctx, name, photo)
    ctx.handles["face"] = _old_model(face_handle)
    for photo in _photos(shared_data, "Jacques_Chirac", 0, 2):
        enroll_media(ctx, "Jacques_Chirac", photo)
    ctx.catalog.engine.dispose()
    return home


@pytest.fixture
def home(enrolled_home: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "home"
    shutil.copytree(enrolled_home, copy)
    return copy


def _versions(ctx: Context) -> list[tuple[int, bool]]:
    with ctx.catalog.session() as s:
        rows = s.scalars(select(GalleryVersion).order_by(GalleryVersion.number))
        return [(r.number, r.current) for r in rows]


def test_a_model_change_re_extracts_the_enrollment_media(
    home: Path, face_handle: ModelHandle, shared_data: Path
) -> None:
    ctx = _open(home, face_handle)
    current = face_handle.model_id
    assert load_gallery(ctx, "face", current)[0] == ["Hugo_Chavez", "Tony_Blair"]

    report = rebuild(ctx)

    chirac = [str(p) for p in _photos(shared_data, "Jacques_Chirac", 0, 2)]
    assert sorted(report["re_extracted"]) == chirac
    assert all(v == {"face": 1} for v in report["re_extracted"].values())
    assert report["changed"] and report["version"] == 1 and report["errors"] == {}
    assert report["identities_added"] == ["Hugo_Chavez", "Jacques_Chirac", "Tony_Blair"]
    with ctx.catalog.session() as s:
        models = set(s.scalars(select(Enrollment.model_id)))
    assert models == {OLD_MODEL, current}  # the old rows stay; the gallery uses the new ones

    names, templates = load_gallery(ctx, "face", current)
    assert names == ["Hugo_Chavez", "Jacques_Chirac", "Tony_Blair"]
    # unseen photos of each person (their mean, as a track's) now match their rebuilt template
    for name in names:
        faces = np.stack(
            [_first_face(face_handle, [p])[0] for p in _photos(shared_data, name, 5, 3)]
        )
        probe = faces.mean(axis=0, keepdims=True)
        probe /= np.linalg.norm(probe)
        assert names[int(np.argmax(cosine_scores(probe, templates)))] == name


def _first_face(face: ModelHandle, photos: list[Path]) -> np.ndarray:
    from biofuse import media

    for photo in photos:
        (found,) = face([media.read_image(photo)])
        if len(found.vectors):  # the photo's subject: its largest face (MTCNN finds bystanders)
            b = found.boxes
            largest = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            return found.vectors[largest : largest + 1]
    raise AssertionError(f"no face found in {photos}")


def test_enrollment_files_that_are_gone_are_reported_not_fatal(
    home: Path, face_handle: ModelHandle, shared_data: Path, tmp_path: Path
) -> None:
    ctx = _open(home, _old_model(face_handle))
    moved = tmp_path / "agassi.jpg"
    shutil.copy(_photos(shared_data, "Andre_Agassi", 0, 1)[0], moved)
    enroll_media(ctx, "Andre_Agassi", moved)
    moved.unlink()
    ctx.handles["face"] = face_handle

    report = rebuild(ctx)

    assert report["errors"] == {str(moved): f"{moved}: the enrollment file is gone"}
    assert "Andre_Agassi" not in report["identities_added"]  # no current-model evidence
    again = rebuild(ctx)  # still gone: reported again, and still nothing to switch to
    assert again["changed"] is False and list(again["errors"]) == [str(moved)]


def test_identify_reads_the_current_version_until_the_next_rebuild(
    home: Path, face_handle: ModelHandle, shared_data: Path
) -> None:
    ctx = _open(home, face_handle)
    model = face_handle.model_id
    rebuild(ctx)
    enroll_media(ctx, "Andre_Agassi", _photos(shared_data, "Andre_Agassi", 0, 1)[0])
    versioned, _ = load_gallery(ctx, "face", model)
    live, _ = load_gallery(ctx, "face", model, snapshot=None)  # the enrollment rows themselves
    assert "Andre_Agassi" not in versioned and "Andre_Agassi" in live
    rebuild(ctx)
    assert "Andre_Agassi" in load_gallery(ctx, "face", model)[0]


def test_rerunning_with_nothing_changed_writes_no_version(
    home: Path, face_handle: ModelHandle
) -> None:
    ctx = _open(home, face_handle)
    first = rebuild(ctx)
    folders = sorted(p.name for p in (home / "galleries").iterdir())
    again = rebuild(ctx)
    assert again["changed"] is False and again["version"] == first["version"]
    assert again["re_extracted"] == {} and again["fingerprint"] == first["fingerprint"]
    assert sorted(p.name for p in (home / "galleries").iterdir()) == folders
    assert _versions(ctx) == [(1, True)]


def test_keeps_only_the_newest_versions_after_the_switch(
    home: Path, face_handle: ModelHandle, shared_data: Path
) -> None:
    ctx = _open(home, face_handle, gallery_keep_versions=2)
    rebuild(ctx)
    for photo in _photos(shared_data, "Tony_Blair", 3, 2):  # each new photo: a new version
        enroll_media(ctx, "Tony_Blair", photo)
        rebuild(ctx)
    assert _versions(ctx) == [(2, False), (3, True)]
    assert sorted(p.name for p in (home / "galleries").glob("v*")) == ["v2", "v3"]
    # a crash after writing v4 but before the switch: the next rebuild clears it away
    shutil.copytree(home / "galleries" / "v3", home / "galleries" / "v4")
    (home / "galleries" / ".partial-dead").mkdir()
    assert rebuild(ctx)["changed"] is False
    assert sorted(p.name for p in (home / "galleries").iterdir()) == [".rebuild.lock", "v2", "v3"]
    report = json.loads((home / "galleries" / "v3" / "report.json").read_text())
    assert report["pruned"] == [1] and report["previous"] == 2


def test_report_names_added_removed_and_updated_templates(
    home: Path, face_handle: ModelHandle, shared_data: Path
) -> None:
    ctx = _open(home, face_handle)
    rebuild(ctx)
    enroll_media(ctx, "Tony_Blair", _photos(shared_data, "Tony_Blair", 3, 1)[0])
    enroll_media(ctx, "Andre_Agassi", _photos(shared_data, "Andre_Agassi", 0, 1)[0])
    with ctx.catalog.session() as s:  # Chavez withdrawn from the gallery
        chavez = s.scalar(select(Identity.id).where(Identity.name == "Hugo_Chavez"))
        s.execute(delete(Enrollment).where(Enrollment.identity_id == chavez))

    report = rebuild(ctx)

    assert report["version"] == 2 and report["previous"] == 1
    assert report["identities_added"] == ["Andre_Agassi"]
    assert report["identities_removed"] == ["Hugo_Chavez"]
    assert sorted((u["identity"], u["why"]) for u in report["templates_updated"]) == [
        ("Andre_Agassi", "new"),
        ("Tony_Blair", "evidence changed"),
    ]
    assert report["template_counts"] == {"face": 3}
    shift = report["calibration_shift"]["face"]
    # 3 identities x few photos is far below the refit minimum: the default is kept, no shift
    assert "kept" in shift["fitted_on"] and shift["max_abs_llr_change"] == 0.0
    markdown = (home / "galleries" / "v2" / "report.md").read_text()
    assert "Identities removed: Hugo_Chavez." in markdown and "| Andre_Agassi | face |" in markdown


def test_calibration_is_refitted_when_there_are_enough_pairs(
    home: Path, face_handle: ModelHandle
) -> None:
    ctx = _open(home, face_handle, gallery_min_calibration_pairs=3)
    report = rebuild(ctx)
    shift = report["calibration_shift"]["face"]
    assert shift["fitted_on"] == "gallery enrollment pairs: 8 genuine, 16 impostor"
    assert shift["after"]["slope"] > 0 and shift["max_abs_llr_change"] > 0
    snapshot = current_gallery(ctx.catalog)
    assert snapshot is not None
    assert snapshot.calibration("face").slope == pytest.approx(shift["after"]["slope"])


def test_a_reader_sees_the_old_or_the_new_gallery_never_a_mixture(
    home: Path, face_handle: ModelHandle, shared_data: Path
) -> None:
    ctx = _open(home, face_handle)
    rebuild(ctx)
    for photo in _photos(shared_data, "Andre_Agassi", 0, 2):
        enroll_media(ctx, "Andre_Agassi", photo)
    seen: list[tuple[int, list[str]]] = []
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        reader_ctx = _open(home)  # its own catalog connection, as another process would have
        while True:
            finished = done.is_set()  # a read that starts after the switch must see v2
            try:
                snap = current_gallery(reader_ctx.catalog)  # verifies every file's checksum
                assert isinstance(snap, GallerySnapshot)
                names, templates = snap.templates("face", face_handle.model_id)  # type: ignore[misc]
                if names != snap.manifest["identities"] or len(templates) != len(names):
                    problems.append(f"v{snap.number}: {names} vs {snap.manifest['identities']}")
                seen.append((snap.number, names))
            except Exception as exc:  # any failure to read is what this test is about
                problems.append(repr(exc))
            if finished and len(seen) >= 3:
                return

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        report = rebuild(ctx)
    finally:
        done.set()
        thread.join(60)
    assert problems == []
    assert report["version"] == 2
    numbers = [n for n, _ in seen]
    assert numbers == sorted(numbers) and numbers[-1] == 2  # never back to the old one
    by_version = {n: names for n, names in seen}
    assert "Andre_Agassi" in by_version[2] and "Andre_Agassi" not in by_version.get(1, [])


def test_the_cohort_comes_from_probe_rows_and_new_probes_make_a_new_version(
    home: Path, face_handle: ModelHandle
) -> None:
    from biofuse.modalities.base import Embeddings, l2_normalise

    ctx = _open(home, face_handle)
    first = rebuild(ctx)
    assert "no rows outside the gallery" in _manifest_group(home, 1)["cohort"]
    snapshot = current_gallery(ctx.catalog)
    assert snapshot is not None and snapshot.normaliser("face", face_handle.model_id) is None

    rng = np.random.default_rng(3)  # people seen in the archive: rows that are not enrollments
    seen = l2_normalise(rng.normal(size=(40, 128)).astype(np.float32))
    keys = [f"video:t{i:04d}" for i in range(40)]
    ctx.store.commit("face", "video", Embeddings(seen, np.ones(40), keys, face_handle.model_id))
    second = rebuild(ctx)

    assert second["changed"] and second["version"] == first["version"] + 1
    assert second["templates_updated"] == []  # same templates, new cohort statistics
    assert _manifest_group(home, 2)["cohort"] == "40 store rows outside the gallery"
    snapshot = current_gallery(ctx.catalog)
    assert snapshot is not None
    norm = snapshot.normaliser("face", face_handle.model_id)
    names, templates = snapshot.templates("face", face_handle.model_id)  # type: ignore[misc]
    scores = cosine_scores(templates, seen).astype(np.float64)
    assert norm is not None and norm.template_stats_ is not None
    np.testing.assert_allclose(norm.template_stats_[0], scores.mean(axis=1), atol=1e-5)
    np.testing.assert_allclose(norm.template_stats_[1], scores.std(axis=1), atol=1e-5)
    assert rebuild(ctx)["changed"] is False


def _manifest_group(home: Path, number: int) -> dict:
    manifest = json.loads((home / "galleries" / f"v{number}" / "manifest.json").read_text())
    (group,) = manifest["groups"]
    return group


def test_cohort_statistics_and_pairs_on_hand_made_vectors() -> None:
    templates = np.array([[1, 0], [0, 1], [1, 1]], np.float32) / np.array([[1], [1], [2**0.5]])
    mean, std, source = cohort_statistics(templates, np.zeros((0, 2), np.float32))
    c = 2**-0.5
    assert source.startswith("the other identities' templates")
    np.testing.assert_allclose(mean, [c / 2, c / 2, c], atol=1e-6)
    np.testing.assert_allclose(std, [c / 2, c / 2, 0], atol=1e-6)
    cohort = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)
    mean, std, source = cohort_statistics(templates[:2], cohort)
    assert source == "4 store rows outside the gallery"
    np.testing.assert_allclose(mean, [0, 0], atol=1e-6)  # scores 1, 0, -1, 0
    np.testing.assert_allclose(std, [0.5**0.5, 0.5**0.5], atol=1e-6)

    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1]], np.float32)
    scores, labels = enrollment_pairs(vectors, np.ones(3, np.float32), ["a", "a", "b"])
    # a0 vs b, a0 vs (a1 alone), a1 vs b, a1 vs (a0 alone), b vs template(a)
    assert labels.tolist() == [0, 1, 0, 1, 0]
    np.testing.assert_allclose(scores[:4], [0.0, 0.8, 0.6, 0.8], atol=1e-6)


@pytest.mark.slow
def test_the_prefect_flow_rebuilds_and_records_a_run(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from biofuse.flows.rebuild import rebuild_gallery

    from biofuse.catalog import Run

    ctx = _open(home)
    with ctx.catalog.session() as s:  # nothing stale: the flow needs no model actor
        s.execute(delete(Enrollment).where(Enrollment.model_id == OLD_MODEL))
    report = rebuild_gallery(overrides={"home": str(home), "modalities": ["face"]})
    assert report["changed"] and report["identities_added"] == ["Hugo_Chavez", "Tony_Blair"]
    with ctx.catalog.session() as s:
        run = s.scalar(select(Run).where(Run.kind == "rebuild"))
    assert run is not None and run.status == "done" and run.summary["version"] == 1

    from typer.testing import CliRunner

    from biofuse.cli import app

    monkeypatch.setenv("BIOFUSE_HOME", str(home))  # --home sets it; put the old value back
    result = CliRunner().invoke(
        app,
        ["--home", str(home), "gallery", "rebuild"],
        env={"BIOFUSE_MODALITIES": "face"},
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    assert "Nothing changed" in result.output and "version 1" in result.output
