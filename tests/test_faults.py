"""Faults an operator will meet: a worker killed mid-archive, a model actor dying mid-batch,
two runs on one archive, a full or read-only store. Each must leave the catalog and the store
whole, and a re-run must finish the work without doing anything twice."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from biofuse.modalities.base import Embeddings
from sqlalchemy import func, select

from biofuse.catalog import DONE, Catalog, Run, Track, Video
from biofuse.errors import StoreError
from biofuse.store import EmbeddingStore

REPO = Path(__file__).resolve().parents[1]
FAKE_MODEL = "fake-000000000000"

# A worker running the real claim -> commit -> catalog -> release path of flows/archive.py
# over many videos, with decoding and the models replaced by deterministic evidence (so a
# kill lands in the bookkeeping, which is what can corrupt, not in a minute of dlib).
WORKER = """
import sys, time, types
sys.path.insert(0, {repo!r})
from pathlib import Path
import numpy as np
from biofuse import media
import biofuse.flows.archive as archive
from biofuse.flows.context import Context
from biofuse.flows.pipeline import TrackEvidence, VideoEvidence
from biofuse.modalities.base import Embeddings

def n_tracks(content_hash):
    return 1 + int(content_hash[:8], 16) % 4

def fake_probe(path):
    return types.SimpleNamespace(
        duration_s=5.0, fps=25.0, width=64, height=64, has_audio=False, has_video=True
    )

def fake_analyze(ctx, path, content_hash):
    n = n_tracks(content_hash)
    rng = np.random.default_rng(int(content_hash[:8], 16))
    time.sleep(0.02)
    keys = [f"{{content_hash[:16]}}:t{{i:04d}}" for i in range(n)]
    evidence = VideoEvidence()
    evidence.tracks = [TrackEvidence(k, 0.0, 1.0, [[0.0, 1.0, 2.0, 3.0, 4.0]], 0.9) for k in keys]
    evidence.face = Embeddings(
        rng.normal(size=(n, 512)).astype(np.float32), np.full(n, 0.9, np.float32), keys,
        {model!r},
    )
    return evidence

media.probe = fake_probe
Context.analyze = fake_analyze
ctx = Context.open(home={home!r}, modalities=["face"])
ctx.handles["face"] = object()  # never called: the analysis above stands in for the model
ids = archive.register_videos(ctx, archive.list_archive(Path({archive!r})))
print("ready", flush=True)
owner, pending = archive.worker_id(), ids
while pending:
    pending = [
        v for v in pending
        if archive.process_one_video(ctx, v, owner, lease_s=1.0) == archive.LEASED
    ]
    time.sleep(0.2 if pending else 0)
print("finished", flush=True)
"""


def n_tracks(content_hash: str) -> int:
    return 1 + int(content_hash[:8], 16) % 4


def check_whole(home: Path) -> int:
    """Catalog and store agree and nothing is partial or doubled; returns the videos done."""
    catalog = Catalog(f"sqlite:///{home / 'catalog.sqlite'}")
    rows = EmbeddingStore(home / "store").read("face", FAKE_MODEL)
    keys = rows.keys.tolist()
    assert len(set(keys)) == len(keys), "a store row is visible twice"
    units = {str(u): int((rows.units == u).sum()) for u in set(rows.units.tolist())}
    for unit, count in units.items():
        assert count == n_tracks(unit), f"{unit[:12]}: {count} of {n_tracks(unit)} rows visible"
    with catalog.session() as s:
        videos = list(s.scalars(select(Video)))
        tracks = dict(
            s.execute(select(Track.video_id, func.count()).group_by(Track.video_id)).all()
        )
    for video in videos:
        expected = n_tracks(video.content_hash)
        assert tracks.get(video.id, 0) in (0, expected), "a video's tracks are partial"
        if video.status == DONE:
            assert tracks.get(video.id) == expected and video.content_hash in units
            assert video.lease_owner is None
    catalog.engine.dispose()
    return sum(v.status == DONE for v in videos)


@pytest.mark.slow
def test_worker_killed_at_20_random_points_leaves_nothing_partial_and_rerun_does_all_once(
    tmp_path: Path,
) -> None:
    archive, home = tmp_path / "archive", tmp_path / "home"
    archive.mkdir()
    rng = np.random.default_rng(20)
    n_videos = 400
    for i in range(n_videos):
        (archive / f"v{i:03d}.mp4").write_bytes(rng.bytes(512))  # distinct content hashes
    script = WORKER.format(repo=str(REPO), home=str(home), archive=str(archive), model=FAKE_MODEL)
    done_after = []
    for _trial in range(20):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.05, 0.8)))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        done_after.append(check_whole(home))
    assert done_after == sorted(done_after)
    mid_run = sum(done < n_videos for done in done_after)
    assert mid_run >= 15, f"only {mid_run} of 20 kills landed mid-archive: add videos"
    rerun = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert "finished" in rerun.stdout, rerun.stderr[-3000:]
    assert check_whole(home) == n_videos
    stored = EmbeddingStore(home / "store").read("face", FAKE_MODEL)
    catalog = Catalog(f"sqlite:///{home / 'catalog.sqlite'}")
    with catalog.session() as s:
        hashes = list(s.scalars(select(Video.content_hash)))
        assert s.scalar(select(func.count()).select_from(Track)) == len(stored)
    assert len(stored) == sum(n_tracks(h) for h in hashes), "every row once, none twice"


# -- a model actor killed mid-video ------------------------------------------------------


def _kill_the_face_actor_mid_video(home: str, video: str) -> None:
    """Runs in a fresh process: the actor restart leaves this process's Ray unable to find
    named actors (even after ray.shutdown() and a new ray.init), which later tests need."""
    import ray
    from biofuse.flows.archive import process_one_video, register_videos
    from biofuse.flows.context import Context

    ctx = Context.open(home=home, modalities=["face"], face_actors=1, face_fps=10.0)
    try:
        (video_id,) = register_videos(ctx, [Path(video)])
        ctx.model("face")
        (actor,) = ctx.actors["face"]
        first = ray.get(actor.info.remote())
        outcome: dict[str, object] = {}
        worker = threading.Thread(
            target=lambda: outcome.update(status=process_one_video(ctx, video_id))
        )
        worker.start()
        while ray.get(actor.info.remote())["items"] == 0:  # the video is streaming frames
            time.sleep(0.05)
        ray.kill(actor, no_restart=False)  # the next batch dies with the process
        worker.join(timeout=300)
        assert outcome.get("status") == DONE
        after = ray.get(actor.info.remote())
        assert after["pid"] != first["pid"], "the actor was restarted in a new process"
        with ctx.catalog.session() as s:
            assert s.query(Track).filter(Track.video_id == video_id).count() == 1
        model_id = ctx.handles["face"].model_id
        assert ctx.store.has_unit("face", model_id, ctx.catalog.video(video_id).content_hash)
        assert len(ctx.store.read("face", model_id)) == 1  # one track, one row, once
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_face_actor_killed_mid_video_is_restarted_and_the_video_completes(
    tmp_path: Path, shared_data: Path
) -> None:
    import multiprocessing

    video = shared_data / "video" / "videoretalking_face_2.mp4"
    if not video.is_file():
        pytest.skip(f"{video} is absent")
    child = multiprocessing.get_context("spawn").Process(
        target=_kill_the_face_actor_mid_video, args=(str(tmp_path / "home"), str(video))
    )
    child.start()
    child.join(timeout=400)
    assert child.exitcode == 0, "the scenario failed: its traceback is in the captured stderr"


# -- two `biofuse process` at once ----------------------------------------------------


@pytest.mark.slow
def test_two_process_runs_on_one_archive_process_each_video_exactly_once(
    tmp_path: Path, shared_data: Path
) -> None:
    videos = [shared_data / "video" / f"videoretalking_face_{i}.mp4" for i in (1, 2, 3, 5)]
    if not all(v.is_file() for v in videos):
        pytest.skip("../shared/data/video is incomplete")
    archive = tmp_path / "archive"
    archive.mkdir()
    for v in videos:
        (archive / v.name).symlink_to(v)
    env = {
        **os.environ,
        "BIOFUSE_HOME": str(tmp_path / "home"),
        "BIOFUSE_MODALITIES": "voice",  # the lightest model: the race is in the bookkeeping
        "BIOFUSE_MAX_PARALLEL_VIDEOS": "1",
    }
    env.pop("BIOFUSE_RAY_ADDRESS", None)
    biofuse = Path(sys.executable).with_name("biofuse")
    runs = [
        subprocess.Popen(
            [str(biofuse), "process", str(archive)],
            # two operators: each with its own Prefect (ephemeral API), which may start slowly
            # on a busy machine; the catalog and the store are what they share
            env={
                **env,
                "PREFECT_HOME": str(tmp_path / f"prefect-{n}"),
                "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [run.communicate(timeout=900)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    catalog = Catalog(f"sqlite:///{tmp_path / 'home' / 'catalog.sqlite'}")
    with catalog.session() as s:
        both = list(s.scalars(select(Run).where(Run.kind == "process")))
        videos = list(s.scalars(select(Video)))
    first, second = both
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    summaries = [r.summary for r in both]
    assert sum(r["processed"] for r in summaries) == len(videos) == 4, summaries
    assert all(v.status == DONE and v.attempts == 1 for v in videos), "a video ran twice"
    store = EmbeddingStore(tmp_path / "home" / "store")
    ((modality, model_id, _),) = store.groups()
    rows = store.read(modality, model_id)
    assert len(set(rows.keys.tolist())) == len(rows)
    assert set(rows.units.tolist()) == {v.content_hash for v in videos}


# -- a full disk, a read-only store -------------------------------------------------------


def rows_for(unit: str, n: int, dim: int = 512) -> Embeddings:
    rng = np.random.default_rng(zlib.crc32(unit.encode()))  # the same in every process
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return Embeddings(vectors, np.ones(n, np.float32), [f"{unit}:{i}" for i in range(n)], "m-0")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real small filesystem (tmpfs); skips where mounting is not allowed."""
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()!r})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_full_store_is_a_clear_error_and_keeps_what_was_committed(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "3m") as disk:
        store = EmbeddingStore(disk / "store")
        first = rows_for("video-a", 200)
        assert store.commit("face", "video-a", first) == 200
        with pytest.raises(StoreError, match="is full .*nothing was committed"):
            store.commit("face", "video-b", rows_for("video-b", 5000))  # ~10 MB on 3 MB
        again = EmbeddingStore(disk / "store").read("face", "m-0")
        assert again.keys.tolist() == first.keys
        np.testing.assert_array_equal(again.vectors, first.vectors)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert store.commit("face", "video-b", rows_for("video-b", 5000)) == 5000  # re-run
        assert len(EmbeddingStore(disk / "store").read("face", "m-0")) == 5200


def test_read_only_store_is_a_clear_error_and_stays_readable(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        store = EmbeddingStore(disk / "store")
        first = rows_for("video-a", 50)
        store.commit("face", "video-a", first)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        for modality in ("face", "voice"):  # an existing group and a new one
            with pytest.raises(StoreError, match="not writable .*mounted read-write"):
                store.commit(modality, "video-b", rows_for("video-b", 10))
        got = EmbeddingStore(disk / "store").read("face", "m-0")
        assert got.keys.tolist() == first.keys
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
        assert store.commit("face", "video-b", rows_for("video-b", 10)) == 10


FILE_SIZE_LIMITED = """
import resource, signal, sys
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
from test_faults import rows_for
from biofuse.errors import StoreError
from biofuse.store import EmbeddingStore
store = EmbeddingStore({root!r})
store.commit("face", "video-a", rows_for("video-a", 50))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
try:
    store.commit("face", "video-b", rows_for("video-b", 5000))
except StoreError as exc:
    print("StoreError:", exc)
"""


def test_write_past_a_file_size_limit_is_reported_like_a_full_disk(tmp_path: Path) -> None:
    """Where no tmpfs can be mounted: RLIMIT_FSIZE in a subprocess makes writes fail (EFBIG)."""
    root = tmp_path / "store"
    script = FILE_SIZE_LIMITED.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "StoreError: the store at" in done.stdout and "is full" in done.stdout
    got = EmbeddingStore(root).read("face", "m-0")
    assert got.keys.tolist() == rows_for("video-a", 50).keys  # the earlier unit, intact
    assert EmbeddingStore(root).commit("face", "video-b", rows_for("video-b", 5000)) == 5000
