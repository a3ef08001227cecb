"""Prefect flows `enroll` and `identify`: enrollment evidence -> templates -> fused decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from sqlalchemy import select

from biofuse import media
from biofuse.catalog import DONE, Enrollment, Identity, Result, SpeechSegment, Track, Video
from biofuse.errors import GalleryError, MediaError
from biofuse.store import StoredRows
from flows.archive import list_archive, process_one_video, register_videos
from flows.context import Context
from flows.pipeline import SegmentEvidence, analyze_video, probe_evidence
from fusion.calibration import load_default
from fusion.fuse import Decision
from fusion.fuse import identify as fuse_identify
from fusion.scores import ModalityScores, score_modality
from fusion.templates import build_templates
from modalities.base import Embeddings


def _image_rows(ctx: Context, path: Path) -> dict[str, Embeddings]:
    """The largest face of a photo (the subject nearest the camera)."""
    face = ctx.model("face")
    (faces,) = face([media.read_image(path)])
    if len(faces.boxes) == 0:
        raise MediaError(f"{path}: no face found in the enrollment photo")
    areas = (faces.boxes[:, 2] - faces.boxes[:, 0]) * (faces.boxes[:, 3] - faces.boxes[:, 1])
    i = int(np.argmax(areas))
    return {
        "face": Embeddings(
            faces.vectors[i : i + 1], faces.quality[i : i + 1], ["photo"], face.model_id
        )
    }


def _audio_rows(ctx: Context, path: Path) -> dict[str, Embeddings]:
    from modalities.voice.resemblyzer_voice import turn_segments
    from modalities.voice.vad import detect_speech

    samples = media.read_audio(path)
    turns = detect_speech(samples, method=ctx.settings.vad, min_turn_s=ctx.settings.min_turn_s)
    if not turns:
        raise MediaError(f"{path}: no speech long enough to enroll")
    return {"voice": ctx.model("voice")(turn_segments(samples, turns, "turn"))}


def _video_rows(ctx: Context, path: Path, digest: str) -> dict[str, Embeddings]:
    """The longest face track of an enrollment video and the speech linked to it."""
    handles = {kind: ctx.model(kind) for kind in ctx.settings.modalities}
    ev = analyze_video(path, digest, ctx.settings, handles.get("face"), handles.get("voice"))
    rows: dict[str, Embeddings] = {}
    subject = max(ev.tracks, key=lambda t: t.end_s - t.start_s, default=None)
    if subject is not None and ev.face is not None:
        rows["face"] = ev.face.take([ev.face.keys.index(subject.key)])
    if ev.voice is not None and len(ev.voice):
        if len(ev.tracks) <= 1:  # the subject alone (or nobody) on screen: all speech is theirs
            mine = {s.key for s in ev.segments}
        else:  # several people: only what was said while the subject alone was seen
            mine = {s.key for s in ev.segments if s.track_key == subject.key}
        keep = [i for i, k in enumerate(ev.voice.keys) if k in mine]
        if keep:
            rows["voice"] = ev.voice.take(keep)
    if not rows:
        raise MediaError(f"{path}: neither a face track nor speech found to enroll")
    return rows


def enroll_media(ctx: Context, identity: str, path: Path) -> dict[str, int]:
    """Embed one enrollment file and record it; enrolling the same file again writes nothing."""
    digest = media.content_hash(path)
    suffix = path.suffix.lower()
    if suffix in media.IMAGE_SUFFIXES:
        rows = _image_rows(ctx, path)
    elif suffix in media.AUDIO_SUFFIXES:
        rows = _audio_rows(ctx, path)
    else:
        rows = _video_rows(ctx, path, digest)
    person = ctx.catalog.identity(identity, create=True)
    assert person is not None
    written = {}
    for modality, emb in rows.items():
        keys = [f"enr:{person.id}:{modality}:{digest[:16]}:{n}" for n in range(len(emb))]
        emb = Embeddings(emb.vectors, emb.quality, keys, emb.model_id)
        written[modality] = ctx.store.commit(modality, f"enroll:{person.id}:{digest}", emb)
        with ctx.catalog.session() as s:
            known = s.scalar(
                select(Enrollment).where(
                    Enrollment.identity_id == person.id,
                    Enrollment.media_hash == digest,
                    Enrollment.model_id == emb.model_id,
                )
            )
            if known is None:
                s.add_all(
                    Enrollment(
                        identity_id=person.id,
                        media_path=str(path),
                        media_hash=digest,
                        modality=modality,
                        model_id=emb.model_id,
                        store_key=key,
                        quality=float(q),
                    )
                    for key, q in zip(keys, emb.quality)
                )
    return written


@flow(name="enroll")
def enroll(
    identity: str,
    media_paths: list[str],
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Add evidence of one identity from photos, audio and videos; bad files are reported."""
    ctx = Context.open(config_path, **(overrides or {}))
    report: dict[str, Any] = {"identity": identity, "files": {}, "errors": {}}
    for raw in media_paths:
        try:
            report["files"][raw] = enroll_media(ctx, identity, Path(raw))
        except MediaError as exc:
            report["errors"][raw] = str(exc)
    return report


def load_gallery(
    ctx: Context, modality: str, model_id: str, stored: StoredRows | None = None
) -> tuple[list[str], np.ndarray]:
    """Templates of every enrolled identity for one model (quality-weighted, renormalised).

    `stored` is the group's rows if the caller has read them already.
    """
    with ctx.catalog.session() as s:
        pairs = s.execute(
            select(Enrollment.store_key, Identity.name)
            .join(Identity, Identity.id == Enrollment.identity_id)
            .where(Enrollment.modality == modality, Enrollment.model_id == model_id)
        ).all()
    if not pairs:
        return [], np.zeros((0, 0), np.float32)
    owner = dict(pairs)
    if stored is None:
        stored = ctx.store.read(modality, model_id)
    rows = stored.select(list(owner))
    return build_templates(rows.vectors, rows.quality, [owner[str(k)] for k in rows.keys])


def _targets(ctx: Context, targets: list[str]) -> list[int]:
    """Video ids for paths (processed first if new) or track keys; all done videos if none."""
    if not targets:
        with ctx.catalog.session() as s:
            return list(s.scalars(select(Video.id).where(Video.status == DONE).order_by(Video.id)))
    ids = []
    for target in targets:
        if Path(target).exists():
            for vid in register_videos(ctx, list_archive(Path(target))):
                if process_one_video(ctx, vid) == DONE:
                    ids.append(vid)
        else:
            with ctx.catalog.session() as s:
                vid = s.scalar(select(Track.video_id).where(Track.key == target))
            if vid is None:
                raise GalleryError(f"{target!r} is neither a file nor a known track key")
            ids.append(vid)
    return ids


def identify_videos(
    ctx: Context, video_ids: list[int], only: set[str] | None = None
) -> list[tuple[int, Decision]]:
    """Fused decisions for every probe (person track or unclaimed speech) of the videos."""
    models = {kind: ctx.model_id(kind) for kind in ctx.settings.modalities}
    # each group is read once: enrollment and probe rows share it
    stored = {m: ctx.store.read(m, model_id) for m, model_id in models.items()}
    galleries = {m: load_gallery(ctx, m, model_id, stored[m]) for m, model_id in models.items()}
    identities = sorted({n for names, _ in galleries.values() for n in names})
    calibrations = {m: load_default(model_id) for m, model_id in models.items()}
    if not identities:
        raise GalleryError("the gallery is empty: enroll identities first (`biofuse enroll`)")
    out: list[tuple[int, Decision]] = []
    for video_id in video_ids:
        with ctx.catalog.session() as s:
            tracks = list(s.scalars(select(Track).where(Track.video_id == video_id)))
            segments = list(
                s.scalars(select(SpeechSegment).where(SpeechSegment.video_id == video_id))
            )
        track_key = {t.id: t.key for t in tracks}
        wanted = {"face": [t.key for t in tracks], "voice": [s.key for s in segments]}
        rows = {m: stored[m].select(wanted[m]).as_embeddings() for m in models}
        seg_ev = [
            SegmentEvidence(s.key, s.start_s, s.end_s, s.quality or 0.0, track_key.get(s.track_id))
            for s in segments
        ]
        probes = probe_evidence(rows, seg_ev, [t.key for t in tracks])
        keys = [k for k in probes if only is None or k in only]
        tables = []
        for m, model_id in models.items():
            names, templates = galleries[m]
            table = score_modality(
                m,
                model_id,
                keys,
                {k: probes[k][m] for k in keys if m in probes[k]},
                names,
                templates,
            )
            # identities not enrolled for this modality: absent (NaN), not zero
            scores = np.full((len(keys), len(identities)), np.nan, np.float32)
            for j, name in enumerate(names):
                scores[:, identities.index(name)] = table.scores[:, j]
            tables.append(ModalityScores(m, model_id, keys, identities, scores, table.quality))
        for decision in fuse_identify(
            tables, calibrations, ctx.settings.top_k, prior_in_gallery=ctx.settings.prior_in_gallery
        ):
            out.append((video_id, decision))
    return out


@flow(name="identify")
def identify(
    targets: list[str] | None = None,
    config_path: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Rank gallery identities for each probe of the targets and record the results."""
    ctx = Context.open(config_path, **(overrides or {}))
    run_id = ctx.catalog.start_run("identify", {"targets": targets or []})
    video_ids = _targets(ctx, targets or [])
    only = {t for t in (targets or []) if not Path(t).exists()} or None
    decisions = identify_videos(ctx, video_ids, only)
    with ctx.catalog.session() as s:
        ids = {p.name: p.id for p in s.scalars(select(Identity))}
        for video_id, d in decisions:
            s.add_all(
                Result(
                    run_id=run_id,
                    probe_key=d.probe,
                    video_id=video_id,
                    rank=c.rank,
                    identity_id=ids[c.identity],
                    fused_llr=c.fused_llr,
                    scores=c.per_modality,
                    decision="match" if d.decision == c.identity else "unknown",
                )
                for c in d.candidates
            )
    ctx.catalog.finish_run(run_id, "done", {"probes": len(decisions)})
    return [
        {
            "video_id": v,
            "probe": d.probe,
            "decision": d.decision,
            "modalities": d.modalities,
            "candidates": [c.__dict__ for c in d.candidates],
        }
        for v, d in decisions
    ]
