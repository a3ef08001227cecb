"""Prefect flow `process_archive`: every video of an archive, once, failures recorded.

A video is the unit of retry and of idempotency: its evidence is committed to the
store under its content hash and the catalog marks it done afterwards, so a
re-run skips it and a crash in between writes nothing twice. Workers running at
once (two `biofuse process`, or several Prefect workers) split the archive through a
lease on each video row (Catalog.claim_video): a video is processed by whoever
claims it, and a dead worker's lease runs out after LEASE_S.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from biofuse.flows.context import Context
from biofuse.flows.pipeline import pipeline_kinds
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from biofuse import media
from biofuse.catalog import DONE, FAILED, SpeechSegment, Track
from biofuse.config import load_settings
from biofuse.errors import MediaError

LEASE_S = 120.0  # a worker renews its lease every LEASE_S / 4 while it processes the video
LEASED = "leased"  # another worker holds the video
ALREADY_DONE = (
    "already-done"  # finished before this worker got to it (by an earlier run or another worker)
)


def worker_id() -> str:
    """Who holds a lease: host and process, plus a nonce so two flows in one process differ."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def stage_archive(url: str, staging: Path) -> Path:
    """A local copy of an archive at an fsspec URL (s3://bucket/archive, memory://...).

    Decoding needs seekable local files; files already staged with the same size are
    not fetched again. Content hashes, not paths, identify videos, so the staging
    folder's name does not matter to the catalog.
    """
    import fsspec

    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(root):
        raise MediaError(f"{url}: no such file or folder")
    local = Path(staging) / hashlib.sha1(url.encode()).hexdigest()[:16]
    sources = [root] if fs.isfile(root) else fs.find(root)
    for source in sources:
        if Path(source).suffix.lower() not in media.VIDEO_SUFFIXES:
            continue
        relative = Path(source).name if source == root else Path(source).relative_to(root)
        target = local / relative
        if target.is_file() and target.stat().st_size == fs.size(source):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(source, str(target))
    return local


def list_archive(archive: Path) -> list[Path]:
    """Every file under `archive` that looks like a video, in a stable order.

    Files with other suffixes are ignored; a file with a video suffix that is not a
    video (empty, truncated, renamed text) is listed and fails with its reason.
    """
    return media.scan_videos(Path(archive))[0]


def register_videos(ctx: Context, paths: list[Path]) -> list[int]:
    """Hash each file and give it a catalog row (the same bytes twice are one video)."""
    ids = []
    for path in paths:
        try:
            digest = media.content_hash(path)
        except OSError as exc:
            digest = f"unreadable:{path}"[:64]
            video = ctx.catalog.register_video(digest, str(path), 0)
            ctx.catalog.update_video(video.id, status=FAILED, error=f"cannot read: {exc}")
            continue
        ids.append(ctx.catalog.register_video(digest, str(path), path.stat().st_size).id)
    return ids


@contextmanager
def leased(ctx: Context, video_id: int, owner: str, lease_s: float) -> Iterator[None]:
    """Keep renewing `owner`'s lease on the video while the block runs."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_s / 4):
            if not ctx.catalog.renew_lease(video_id, owner, lease_s):
                return  # expired and taken over: the other worker's result will stand

    keeper = threading.Thread(target=renew, name=f"lease-{video_id}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        stop.set()
        keeper.join()


def claim_and_process(ctx: Context, video_id: int, owner: str, lease_s: float = LEASE_S) -> str:
    """Claim, analyze, commit to the store, then mark done.

    Returns DONE or FAILED for work this worker did, ALREADY_DONE or LEASED for work it
    left to others. MediaError is permanent (recorded, not retried); anything else
    propagates so that the task is retried (by the same owner, which may re-claim its
    own lease).
    """
    if ctx.catalog.video(video_id).status == DONE:
        return ALREADY_DONE
    if not ctx.catalog.claim_video(video_id, owner, lease_s):
        return ALREADY_DONE if ctx.catalog.video(video_id).status == DONE else LEASED
    with leased(ctx, video_id, owner, lease_s):
        return _process_claimed(ctx, video_id, owner)


def process_one_video(
    ctx: Context, video_id: int, owner: str | None = None, lease_s: float = LEASE_S
) -> str:
    """The video's status after trying it: DONE (by anyone), FAILED, or LEASED."""
    status = claim_and_process(ctx, video_id, owner or worker_id(), lease_s)
    return DONE if status == ALREADY_DONE else status


def _process_claimed(ctx: Context, video_id: int, owner: str) -> str:
    video = ctx.catalog.video(video_id)
    started = time.perf_counter()
    path = Path(video.path)
    try:
        info = media.probe(path)
        ctx.catalog.update_video(
            video_id,
            duration_s=info.duration_s,
            fps=info.fps,
            width=info.width,
            height=info.height,
            has_audio=info.has_audio,
        )
        evidence = ctx.analyze(path, video.content_hash)
    except MediaError as exc:
        ctx.catalog.release_video(video_id, owner, status=FAILED, error=str(exc))
        return FAILED
    for modality, rows in evidence.rows.items():
        ctx.store.commit(modality, video.content_hash, rows)
    ctx.catalog.replace_video_evidence(
        video_id,
        [
            Track(
                key=t.key,
                kind=t.kind,
                start_s=t.start_s,
                end_s=t.end_s,
                n_detections=len(t.boxes),
                boxes=t.boxes,
                quality=t.quality,
            )
            for t in evidence.tracks
        ],
        [
            (
                SpeechSegment(key=s.key, start_s=s.start_s, end_s=s.end_s, quality=s.quality),
                s.track_key,
            )
            for s in evidence.segments
        ],
    )
    done = ctx.catalog.release_video(
        video_id,
        owner,
        status=DONE,
        notes="; ".join(evidence.notes) or None,
        processing_s=time.perf_counter() - started,
    )
    # Lost the lease (expired while we worked): the new holder finishes the same unit.
    return DONE if done else LEASED


@task(name="process-video", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def process_video_task(ctx: Context, video_id: int, owner: str) -> str:
    return claim_and_process(ctx, video_id, owner)


def _with_choices(
    overrides: dict[str, Any] | None, modalities: list[str] | None, models: dict[str, str] | None
) -> dict[str, Any]:
    """The deployment's parameters as settings overrides: models {"face": "dlib-resnet"}."""
    merged = dict(overrides or {})
    if modalities:
        merged["modalities"] = list(modalities)
    for kind, name in (models or {}).items():
        merged[f"{kind}_model"] = name  # an unknown kind fails as an unknown setting
    return merged


@flow(name="process_archive", log_prints=True)
def process_archive(
    archive: str,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    modalities: list[str] | None = None,
    models: dict[str, str] | None = None,
) -> dict[str, Any]:
    """List, hash and register an archive's videos, then process each pending one.

    `archive` is a folder, a file, or an fsspec URL (staged locally first);
    `modalities` and `models` (modality -> model name) override the configuration.
    """
    logger = get_run_logger()
    ctx = Context.open(config_path, **_with_choices(overrides, modalities, models))
    run_id = ctx.catalog.start_run("process", {"archive": archive})
    local = archive
    if "://" in archive and not archive.startswith("file://"):
        local = str(stage_archive(archive, ctx.settings.home / "staging"))
    paths, ignored = media.scan_videos(Path(local.removeprefix("file://")))
    for path, reason in ignored.items():
        logger.warning("skipped %s: %s", path, reason)
    video_ids = list(dict.fromkeys(register_videos(ctx, paths)))  # the same bytes twice: one
    pending = [v for v in video_ids if ctx.catalog.video(v).status != DONE]
    logger.info("%d videos, %d to process", len(video_ids), len(pending))
    for kind in pipeline_kinds(ctx.settings):  # load models once, before videos race for them
        ctx.model(kind)
    owner = worker_id()
    futures = [(v, process_video_task.submit(ctx, v, owner)) for v in pending]
    summary = {"videos": len(video_ids), "processed": 0, "failed": 0, "skipped": 0}
    summary["skipped"] = len(video_ids) - len(pending)
    for video_id, future in futures:
        try:
            status = future.result()
        except Exception as exc:  # retries exhausted: record it, go on with the archive
            ctx.catalog.release_video(
                video_id, owner, status=FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
            )
            logger.error("video %d failed: %s", video_id, traceback.format_exc(limit=3))
            status = FAILED
        if status in (LEASED, ALREADY_DONE):  # another worker has it or finished it meanwhile
            summary["skipped"] += 1
        else:
            summary["processed" if status == DONE else "failed"] += 1
    ctx.catalog.finish_run(run_id, "done", {**summary, "models": ctx.model_stats()})
    return summary


def run_process_archive(
    archive: str,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
    modalities: list[str] | None = None,
    models: dict[str, str] | None = None,
) -> dict[str, Any]:
    """`process_archive` with `max_parallel_videos` videos in flight at once."""
    merged = _with_choices(overrides, modalities, models)
    settings = load_settings(Path(config_path) if config_path else None, **merged)
    runner = ThreadPoolTaskRunner(max_workers=settings.max_parallel_videos)
    return process_archive.with_options(task_runner=runner)(archive, config_path, merged)
