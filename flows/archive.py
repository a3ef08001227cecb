"""Prefect flow `process_archive`: every video of an archive, once, failures recorded.

A video is the unit of retry and of idempotency: its evidence is committed to the
store under its content hash and the catalog marks it done afterwards, so a
re-run skips it and a crash in between writes nothing twice.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NONE as NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from biofuse import media
from biofuse.catalog import DONE, FAILED, RUNNING, SpeechSegment, Track
from biofuse.config import load_settings
from biofuse.errors import MediaError
from flows.context import Context
from flows.pipeline import analyze_video


def list_archive(archive: Path) -> list[Path]:
    """Every file under `archive` that looks like a video, in a stable order.

    Files with other suffixes are ignored; a file with a video suffix that is not a
    video (empty, truncated, renamed text) is listed and fails with its reason.
    """
    archive = Path(archive)
    if archive.is_file():
        return [archive]
    if not archive.is_dir():
        raise MediaError(f"{archive}: no such file or folder")
    return sorted(
        p for p in archive.rglob("*") if p.is_file() and p.suffix.lower() in media.VIDEO_SUFFIXES
    )


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


def process_one_video(ctx: Context, video_id: int) -> str:
    """Analyze, commit to the store, then mark done. Returns the final status.

    MediaError is permanent (recorded, not retried); anything else propagates so
    that the task is retried.
    """
    video = ctx.catalog.video(video_id)
    if video.status == DONE:
        return DONE
    started = time.perf_counter()
    ctx.catalog.update_video(video_id, status=RUNNING, attempts=video.attempts + 1, error=None)
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
        handles = {kind: ctx.model(kind) for kind in ctx.settings.modalities}
        evidence = analyze_video(
            path, video.content_hash, ctx.settings, handles.get("face"), handles.get("voice")
        )
    except MediaError as exc:
        ctx.catalog.update_video(video_id, status=FAILED, error=str(exc))
        return FAILED
    for modality, rows in (("face", evidence.face), ("voice", evidence.voice)):
        if rows is not None:
            ctx.store.commit(modality, video.content_hash, rows)
    ctx.catalog.replace_video_evidence(
        video_id,
        [
            Track(
                key=t.key,
                kind="face",
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
    ctx.catalog.update_video(
        video_id,
        status=DONE,
        notes="; ".join(evidence.notes) or None,
        processing_s=time.perf_counter() - started,
    )
    return DONE


@task(name="process-video", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def process_video_task(ctx: Context, video_id: int) -> str:
    return process_one_video(ctx, video_id)


@flow(name="process_archive", log_prints=True)
def process_archive(
    archive: str, config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """List, hash and register an archive's videos, then process each pending one."""
    logger = get_run_logger()
    ctx = Context.open(config_path, **(overrides or {}))
    run_id = ctx.catalog.start_run("process", {"archive": archive})
    paths = list_archive(Path(archive))
    video_ids = register_videos(ctx, paths)
    pending = [v for v in video_ids if ctx.catalog.video(v).status != DONE]
    logger.info("%d videos, %d to process", len(video_ids), len(pending))
    for kind in ctx.settings.modalities:  # load models once, before the videos race for them
        ctx.model(kind)
    futures = [(v, process_video_task.submit(ctx, v)) for v in pending]
    summary = {"videos": len(video_ids), "processed": 0, "failed": 0, "skipped": 0}
    summary["skipped"] = len(video_ids) - len(pending)
    for video_id, future in futures:
        try:
            status = future.result()
        except Exception as exc:  # retries exhausted: record it, go on with the archive
            ctx.catalog.update_video(
                video_id, status=FAILED, error=f"{type(exc).__name__}: {exc}"[:2000]
            )
            logger.error("video %d failed: %s", video_id, traceback.format_exc(limit=3))
            status = FAILED
        summary["processed" if status == DONE else "failed"] += 1
    ctx.catalog.finish_run(run_id, "done", summary)
    return summary


def run_process_archive(
    archive: str, config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`process_archive` with `max_parallel_videos` videos in flight at once."""
    settings = load_settings(Path(config_path) if config_path else None, **(overrides or {}))
    runner = ThreadPoolTaskRunner(max_workers=settings.max_parallel_videos)
    return process_archive.with_options(task_runner=runner)(archive, config_path, overrides)
