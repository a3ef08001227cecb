"""Person tracks end to end: the real archive flow on 4 s of the pedestrian video makes
person tracks, and gait and body rows keyed by them (HOG + tracker, silhouettes, MediaPipe
Pose, the shipped gait and body models in Ray actors, Zarr store, SQLite catalog)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from biofuse.catalog import Track, Video

SECONDS = 4.0


def cut_clip(source: Path, target: Path, seconds: float) -> int:
    """The first `seconds` of `source` re-encoded to an .mp4 (video only); frames written."""
    import av

    written = 0
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream_in = src.streams.video[0]
        rate = stream_in.average_rate or Fraction(10)
        out = dst.add_stream("mpeg4", rate=rate)
        out.width, out.height, out.pix_fmt = stream_in.width, stream_in.height, "yuv420p"
        for frame in src.decode(stream_in):
            if frame.time is not None and frame.time >= seconds:
                break
            image = frame.to_ndarray(format="rgb24")
            for packet in out.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                dst.mux(packet)
            written += 1
        for packet in out.encode():
            dst.mux(packet)
    return written


@pytest.fixture(scope="module")
def pedestrian_clip(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    source = shared_data / "video" / "opencv_vtest_pedestrians.avi"
    if not source.is_file():
        pytest.skip(f"{source} is absent")
    folder = tmp_path_factory.mktemp("pedestrians")
    frames = cut_clip(source, folder / "vtest_4s.mp4", SECONDS)
    assert 30 <= frames <= 50  # 10 fps
    return folder


@pytest.mark.slow
def test_archive_flow_makes_person_tracks_with_gait_and_body_rows(
    pedestrian_clip: Path, tmp_path: Path
) -> None:
    from biofuse.flows.archive import run_process_archive
    from biofuse.flows.context import Context

    from biofuse.store import EmbeddingStore

    # 0.25 CPU per actor: 2 face + person + gait + body actors must fit on a 2-core Ray
    overrides = {
        "home": str(tmp_path / "home"),
        "modalities": ["face", "gait", "body"],
        "num_cpus_per_actor": 0.25,
    }
    summary = run_process_archive(str(pedestrian_clip), overrides=overrides)
    assert summary == {"videos": 1, "processed": 1, "failed": 0, "skipped": 0}

    ctx = Context.open(**overrides)
    with ctx.catalog.session() as s:
        (video,) = list(s.scalars(select(Video)))
        tracks = list(s.scalars(select(Track)))
    assert video.status == "done", video.error
    people = [t for t in tracks if t.kind == "person"]
    # several pedestrians walk through the first seconds; each track spans real time
    assert len(people) >= 3, [(t.kind, t.n_detections) for t in tracks]
    assert all(0 <= t.start_s < t.end_s <= SECONDS + 0.2 for t in people)
    person_keys = {t.key for t in people}

    store = EmbeddingStore(ctx.settings.store_url)
    for modality in ("gait", "body"):
        model_id = ctx.model_id(modality)  # resolved from settings, no model loaded
        assert model_id.startswith(getattr(ctx.settings, f"{modality}_model"))
        rows = store.read(modality, model_id)
        keys = {str(k) for k in rows.keys}
        assert keys, f"no {modality} rows in the store"
        assert keys <= person_keys, f"{modality} rows not keyed by person tracks"
        # a person walking for 2 s (20 detections at 10 fps) gives both gait and body
        assert {t.key for t in people if t.n_detections >= 20} <= keys
        assert len(np.unique(rows.vectors.round(5), axis=0)) == len(rows)  # one per person
        assert np.isfinite(rows.vectors).all() and (rows.quality > 0).all()
    # body rows are unit 5-d descriptors; gait-compact rows raw [channels x 16 parts] embeddings
    body = store.read("body", ctx.model_id("body"))
    assert body.vectors.shape[1] == 5
    np.testing.assert_allclose(np.linalg.norm(body.vectors, axis=1), 1.0, atol=1e-4)
    gait = store.read("gait", ctx.model_id("gait"))
    assert gait.vectors.shape[1] % 16 == 0


def test_model_id_resolves_every_configured_kind_without_loading(tmp_path: Path) -> None:
    from biofuse.flows.context import Context

    from biofuse.errors import ConfigError, ModelMissingError

    ctx = Context.open(home=str(tmp_path / "home"))
    for kind in ("face", "voice", "gait", "body"):
        name = getattr(ctx.settings, f"{kind}_model")
        model_id = ctx.model_id(kind)
        assert model_id.startswith(f"{name}-") and len(model_id) == len(name) + 13
    assert ctx.handles == {}  # nothing was loaded
    with pytest.raises(ModelMissingError, match=r"ctx.model\('person'\)"):
        ctx.model_id("person")  # HOG has no registry file: only the loaded detector knows its id
    with pytest.raises(ConfigError, match="unknown model kind"):
        ctx.model_id("iris")
