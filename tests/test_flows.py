"""The real thing on a tiny archive: Prefect flows, Ray actors, Zarr store, SQLite catalog."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import write_bad_corpus
from sqlalchemy import select

from biofuse.catalog import Catalog, Run, SpeechSegment, Track, Video
from biofuse.store import EmbeddingStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session():
    import ray

    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory, shared_data: Path
) -> tuple[Path, dict[str, str]]:
    videos = shared_data / "video"
    if not videos.is_dir():
        pytest.skip("../shared/data/video is absent")
    folder = tmp_path_factory.mktemp("archive")
    expected = write_bad_corpus(folder / "bad", videos / "videoretalking_face_5.mp4")
    for name in ("videoretalking_face_2.mp4", "videoretalking_face_3.mp4"):
        shutil.copy(videos / name, folder / name)
        expected[name] = "done"
    return folder, expected


def test_archive_flow_records_every_file_and_reruns_write_nothing(
    archive: tuple[Path, dict[str, str]], tmp_path: Path, ray_session: None
) -> None:
    from biofuse.flows.archive import run_process_archive
    from biofuse.flows.context import Context

    folder, expected = archive
    overrides = {"home": str(tmp_path / "home")}
    summary = run_process_archive(str(folder), overrides=overrides)
    assert summary == {"videos": 7, "processed": 3, "failed": 4, "skipped": 0}

    ctx = Context.open(**overrides)
    with ctx.catalog.session() as s:
        videos = {Path(v.path).name: v for v in s.scalars(select(Video))}
        tracks = list(s.scalars(select(Track)))
        segments = list(s.scalars(select(SpeechSegment)))
    assert {name: v.status for name, v in videos.items()} == expected
    assert "empty file" in videos["zero_bytes.mp4"].error
    assert "no video stream" in videos["audio_only.mp4"].error
    assert videos["video_only.mp4"].notes == "no audio stream: voice skipped"
    for name in ("videoretalking_face_2.mp4", "videoretalking_face_3.mp4"):
        own = [t for t in tracks if t.video_id == videos[name].id]
        assert len(own) == 1, f"{name}: one talking head, one track"
        assert own[0].end_s - own[0].start_s > 4.0
        speech = [g for g in segments if g.video_id == videos[name].id]
        assert speech and all(g.track_id == own[0].id for g in speech)

    store = EmbeddingStore(ctx.settings.store_url)
    counts = {m: n for m, _model, n in store.groups()}
    assert counts["face"] == 2 and counts["voice"] == len(segments)

    # The models ran in Ray actors, which batched the calls; the run records how well.
    with ctx.catalog.session() as s:
        (run,) = s.scalars(select(Run).where(Run.kind == "process"))
    face = run.summary["models"]["face"]
    assert face["actors"] == ctx.settings.face_actors
    assert face["items"] >= 40 and 0 < face["batches"] <= face["items"]
    assert face["busy_actors"] == face["actors"], "calls alternate between the face actors"

    again = run_process_archive(str(folder), overrides=overrides)
    assert again["skipped"] == 3 and again["processed"] == 0
    assert {m: n for m, _model, n in store.groups()} == counts


def test_enroll_and_identify_name_the_enrolled_person_only(
    archive: tuple[Path, dict[str, str]], tmp_path: Path, shared_data: Path, ray_session: None
) -> None:
    from biofuse.flows.archive import run_process_archive
    from biofuse.flows.gallery import enroll, identify

    folder, _ = archive
    overrides = {"home": str(tmp_path / "home")}
    run_process_archive(str(folder), overrides=overrides)
    aoc = shared_data / "video" / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"
    report = enroll("AOC", [str(aoc)], overrides=overrides)
    assert report["errors"] == {} and report["files"][str(aoc)]["face"] == 1
    assert report["gallery_version"] is None  # no rebuild yet: identify reads the rows live
    blair = sorted((shared_data / "lfw-dev/images/Tony_Blair").glob("*.jpg"))[:3]
    enroll("Tony_Blair", [str(p) for p in blair], overrides=overrides)
    assert enroll("AOC", [str(aoc)], overrides=overrides)["files"][str(aoc)] == {
        "face": 0,
        "voice": 0,
    }

    decisions = identify([], overrides=overrides)
    catalog = Catalog(f"sqlite:///{tmp_path / 'home' / 'catalog.sqlite'}")
    with catalog.session() as s:
        names = {v.id: Path(v.path).name for v in s.scalars(select(Video))}
    by_video = {names[d["video_id"]]: d for d in decisions if ":t" in d["probe"]}
    aoc_probe = by_video["videoretalking_face_3.mp4"]
    assert aoc_probe["decision"] == "AOC"
    assert aoc_probe["modalities"] == ["face", "voice"]
    best = aoc_probe["candidates"][0]
    assert best["per_modality"]["face"]["score"] > 0.9
    assert best["per_modality"]["voice"]["score"] > 0.8
    other = by_video["videoretalking_face_2.mp4"]  # Eric Swalwell, never enrolled
    assert other["decision"] == "unknown", other["candidates"]
    assert other["candidates"][0]["fused_llr"] < best["fused_llr"] - 5
