"""Prefect flows `enroll` and `identify`: enrollment evidence -> templates -> fused decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from biofuse.flows.archive import list_archive, process_one_video, register_videos
from biofuse.flows.context import Context
from biofuse.flows.pipeline import SegmentEvidence, probe_evidence
from biofuse.flows.rebuild import GallerySnapshot, current_gallery
from biofuse.fusion.calibration import LinearCalibration, calibration_record, load_default
from biofuse.fusion.decide import OperatorCalibration
from biofuse.fusion.fuse import Decision
from biofuse.fusion.fuse import identify as fuse_identify
from biofuse.fusion.learned import KINDS as LEARNED_KINDS
from biofuse.fusion.learned import LearnedFusion
from biofuse.fusion.normalize import choose_cohort
from biofuse.fusion.scores import ModalityScores, metric_for_model, score_modality
from biofuse.fusion.search import GalleryIndex
from biofuse.fusion.templates import build_templates
from biofuse.modalities.base import Embeddings
from prefect import flow
from sqlalchemy import select

from biofuse import media
from biofuse.catalog import DONE, Enrollment, Identity, Result, SpeechSegment, Track, Video
from biofuse.errors import GalleryError, MediaError, without_path
from biofuse.registry import MODALITIES
from biofuse.store import StoredRows


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
    from biofuse.modalities.voice.resemblyzer_voice import turn_segments
    from biofuse.modalities.voice.vad import detect_speech

    samples = media.read_audio(path)
    turns = detect_speech(samples, method=ctx.settings.vad, min_turn_s=ctx.settings.min_turn_s)
    if not turns:
        raise MediaError(f"{path}: no speech long enough to enroll")
    return {"voice": ctx.model("voice")(turn_segments(samples, turns, "turn"))}


def _video_rows(ctx: Context, path: Path, digest: str) -> dict[str, Embeddings]:
    """The longest face track of an enrollment video and the speech linked to it."""
    ev = ctx.analyze(path, digest)
    rows: dict[str, Embeddings] = {}
    subject = max(ev.tracks, key=lambda t: t.end_s - t.start_s, default=None)
    for modality, found in ev.rows.items():  # rows keyed by track: the subject's
        if MODALITIES[modality].keyed_by != "track":
            continue
        if subject is not None and subject.key in found.keys:
            rows[modality] = found.take([found.keys.index(subject.key)])
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


def check_enrollment_file(path: Path) -> None:
    """Raise MediaError unless `path` is a photo, recording or video that decodes.

    Cheap: a photo's one frame is decoded, a recording's or video's headers are read.
    Every input is checked before the first is enrolled, so a bad file in the list
    cannot leave the call half-done.
    """
    if path.is_dir():
        raise MediaError(f"{path}: a folder, not a photo, recording or video")
    if not path.exists():
        raise MediaError(f"{path}: no such file")
    if not path.is_file():
        raise MediaError(f"{path}: not a regular file")
    suffix = path.suffix.lower()
    if suffix in media.IMAGE_SUFFIXES:
        media.read_image(path)
    elif suffix in media.AUDIO_SUFFIXES:
        if not media.probe(path).has_audio:
            raise MediaError(f"{path}: no audio stream")
    elif not media.probe(path).has_video:
        raise MediaError(f"{path}: no video stream")


def check_enrollment_files(paths: list[str]) -> tuple[list[str], dict[str, str]]:
    """The files that can be enrolled, and the reason for each that cannot."""
    good: list[str] = []
    bad: dict[str, str] = {}
    for raw in paths:
        try:
            check_enrollment_file(Path(raw))
        except MediaError as exc:
            bad[raw] = without_path(raw, str(exc))
        else:
            good.append(raw)
    return good, bad


# files finished per `progress_key` of a running `enroll` (read by the CLI's progress bar)
ENROLL_PROGRESS: dict[str, int] = {}


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
        # the model's weight digest is in the key: re-enrolling the same file with an upgraded
        # model (the nightly rebuild) must not collide with the old model's unique store_key
        tag = emb.model_id.rsplit("-", 1)[-1][:12]
        keys = [f"enr:{person.id}:{modality}:{tag}:{digest[:16]}:{n}" for n in range(len(emb))]
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
    progress_key: str | None = None,
) -> dict[str, Any]:
    """Add evidence of one identity from photos, audio and videos; bad files are reported.

    Every file is checked before any is enrolled; those that fail the check are
    reported in `errors` and skipped.
    """
    ctx = Context.open(config_path, **(overrides or {}))
    good, errors = check_enrollment_files(media_paths)
    report: dict[str, Any] = {"identity": identity, "files": {}, "errors": errors}
    for raw in good:
        try:
            report["files"][raw] = enroll_media(ctx, identity, Path(raw))
        except MediaError as exc:
            report["errors"][raw] = without_path(raw, str(exc))
        if progress_key is not None:
            ENROLL_PROGRESS[progress_key] = ENROLL_PROGRESS.get(progress_key, 0) + 1
    # identify reads the current gallery version; new rows join it at the next rebuild
    snapshot = current_gallery(ctx.catalog)
    report["gallery_version"] = snapshot.number if isinstance(snapshot, GallerySnapshot) else None
    return report


def load_gallery(
    ctx: Context,
    modality: str,
    model_id: str,
    stored: StoredRows | None = None,
    snapshot: GallerySnapshot | None | bool = True,
) -> tuple[list[str], np.ndarray]:
    """Templates of every enrolled identity for one model (quality-weighted, in its metric).

    Once `biofuse gallery rebuild` has run, templates come from the current gallery
    version (`snapshot`; True resolves it here, so callers reading several modalities
    should resolve it once with `current_gallery` and pass it); enrollments made
    since join at the next rebuild. Without a version, or for a model the version
    lacks, they are built from the enrollment rows. `stored` is the group's rows if
    the caller has read them already.
    """
    if snapshot is True:
        snapshot = current_gallery(ctx.catalog)
    if isinstance(snapshot, GallerySnapshot):
        versioned = snapshot.templates(modality, model_id)
        if versioned is not None:
            return versioned
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
    labels = [owner[str(k)] for k in rows.keys]
    # in the model's own space: a part-Euclidean (gait) template must not be renormalised
    return build_templates(rows.vectors, rows.quality, labels, metric_for_model(model_id))


def pick_cohort(
    ctx: Context,
    modality: str,
    model_id: str,
    size: int = 300,
    stored: StoredRows | None = None,
    seed: int = 0,
) -> np.ndarray:
    """(n, dim) cohort vectors for score normalisation: store rows of this model that are not
    enrollment (gallery) rows, a seeded draw of at most `size`
    (`biofuse.fusion.normalize.choose_cohort`).
    """
    with ctx.catalog.session() as s:
        gallery_keys = set(
            s.scalars(
                select(Enrollment.store_key).where(
                    Enrollment.modality == modality, Enrollment.model_id == model_id
                )
            )
        )
    rows = stored if stored is not None else ctx.store.read(modality, model_id)
    return rows.vectors[choose_cohort(rows.keys, gallery_keys, size, seed)]


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


def fusion_setup(
    ctx: Context, models: dict[str, str], snapshot: GallerySnapshot | None
) -> tuple[dict[str, LinearCalibration], dict[str, Any]]:
    """Calibrations and fusion arguments for identify, the most specific source winning:
    the operator's `biofuse calibrate` file, else the gallery version's refit, else the
    shipped defaults. A calibration or learned fusion fitted for other model ids is refused.
    """
    settings = ctx.settings
    calibrations = {m: load_default(model_id) for m, model_id in models.items()}
    if isinstance(snapshot, GallerySnapshot):
        for m in models:
            refit = snapshot.calibration(m)
            if refit is not None:
                calibrations[m] = refit
    args: dict[str, Any] = {"weights": settings.fusion_weights}
    if settings.fusion_method in LEARNED_KINDS:
        folder = settings.learned_fusion_dir or settings.home / "fusion"
        args["learned"] = LearnedFusion.load(folder)
    else:
        args["method"] = settings.fusion_method
    path = settings.calibration_path or settings.home / "calibration.json"
    if path.is_file():
        operator = OperatorCalibration.load(path)
        operator.check_model_ids(models)
        calibrations.update({m: c for m, c in operator.calibrations.items() if m in models})
        # its threshold was fitted on fused scores of exactly its modalities and method
        if operator.fusion_method == settings.fusion_method and set(operator.model_ids) == set(
            models
        ):
            args["threshold_llr"] = operator.threshold
    return calibrations, args


def identify_videos(
    ctx: Context,
    video_ids: list[int],
    only: set[str] | None = None,
    basis: dict[str, Any] | None = None,
) -> list[tuple[int, Decision]]:
    """Fused decisions for every probe (person track or unclaimed speech) of the videos.

    `basis`, when given, receives the model ids and calibrations the decisions used, for
    the run's record (a decision record cites them long after the defaults were refitted).
    """
    models = {kind: ctx.model_id(kind) for kind in ctx.settings.modalities}
    # each group is read once: enrollment and probe rows share it
    stored = {m: ctx.store.read(m, model_id) for m, model_id in models.items()}
    snapshot = current_gallery(ctx.catalog)  # one gallery version for every modality of the run
    galleries = {
        m: load_gallery(ctx, m, model_id, stored[m], snapshot) for m, model_id in models.items()
    }
    identities = sorted({n for names, _ in galleries.values() for n in names})
    calibrations, fusion_args = fusion_setup(ctx, models, snapshot)
    if basis is not None:
        basis["models"] = dict(models)
        basis["calibrations"] = {m: calibration_record(c) for m, c in calibrations.items()}
    if not identities:
        raise GalleryError("the gallery is empty: enroll identities first (`biofuse enroll`)")
    # large cosine-metric galleries are searched through the version's index: each probe's
    # shortlist, then every shortlisted identity scored exactly in every modality
    searchers: dict[str, GalleryIndex] = {}
    if isinstance(snapshot, GallerySnapshot):
        for m, model_id in models.items():
            if len(galleries[m][0]) > ctx.settings.gallery_shortlist_above:
                found = snapshot.search_index(m, model_id)
                if found is not None:
                    searchers[m] = found
    out: list[tuple[int, Decision]] = []
    for video_id in video_ids:
        with ctx.catalog.session() as s:
            tracks = list(s.scalars(select(Track).where(Track.video_id == video_id)))
            segments = list(
                s.scalars(select(SpeechSegment).where(SpeechSegment.video_id == video_id))
            )
        track_key = {t.id: t.key for t in tracks}
        # rows keyed by segment (voice) or by track, as each modality declares
        keys_by = {"segment": [s.key for s in segments], "track": [t.key for t in tracks]}
        rows = {
            m: stored[m].select(keys_by[MODALITIES[m].keyed_by]).as_embeddings() for m in models
        }
        seg_ev = [
            SegmentEvidence(s.key, s.start_s, s.end_s, s.quality or 0.0, track_key.get(s.track_id))
            for s in segments
        ]
        probes = probe_evidence(rows, seg_ev, [t.key for t in tracks])
        keys = [k for k in probes if only is None or k in only]
        evidence = {m: {k: probes[k][m] for k in keys if m in probes[k]} for m in models}
        shown, comparable_n = identities, None
        if searchers:
            shown, comparable_n = _shortlist(
                galleries, evidence, keys, searchers, ctx.settings.gallery_shortlist
            )
        column = {name: j for j, name in enumerate(shown)}
        tables = []
        for m, model_id in models.items():
            names, templates = galleries[m]
            if shown is not identities:  # only the shortlisted identities' templates
                rows = [j for j, name in enumerate(names) if name in column]
                names, templates = [names[j] for j in rows], templates[rows]
            table = score_modality(
                m, model_id, keys, evidence[m], names, templates, metric_for_model(model_id)
            )
            # identities not enrolled for this modality: absent (NaN), not zero
            scores = np.full((len(keys), len(shown)), np.nan, np.float32)
            scores[:, [column[name] for name in names]] = table.scores
            tables.append(ModalityScores(m, model_id, keys, shown, scores, table.quality))
        for decision in fuse_identify(
            tables,
            calibrations,
            ctx.settings.top_k,
            prior_in_gallery=ctx.settings.prior_in_gallery,
            comparable_n=comparable_n,
            **fusion_args,
        ):
            if isinstance(snapshot, GallerySnapshot):
                decision.gallery_version = snapshot.number
            out.append((video_id, decision))
    return out


def _shortlist(
    galleries: dict[str, tuple[list[str], np.ndarray]],
    evidence: dict[str, dict[str, tuple[np.ndarray, float]]],
    keys: list[str],
    searchers: dict[str, GalleryIndex],
    size: int,
) -> tuple[list[str], list[int]]:
    """The identities worth scoring for these probes, and each probe's N on the whole gallery.

    An indexed modality contributes each probe's `size` best templates (the index picks,
    exact scores rank); a brute-force one (gait) every identity, when a probe has its evidence.
    N counts every identity sharing a modality with the probe, as fuse.identify would on
    the full gallery, so the open-set threshold does not depend on the shortlist.
    """
    chosen: set[str] = set()
    for m, (names, _templates) in galleries.items():
        if not evidence[m]:
            continue
        if m not in searchers:
            chosen.update(names)
            continue
        vectors = np.stack([vector for vector, _q in evidence[m].values()])
        found = searchers[m].shortlist(vectors, size)
        chosen.update(names[i] for i in np.unique(found) if i >= 0)
    counts: dict[frozenset[str], int] = {}
    comparable_n = []
    for k in keys:
        present = frozenset(m for m in galleries if k in evidence[m])
        if present not in counts:
            counts[present] = len(set().union(*(galleries[m][0] for m in present)))
        comparable_n.append(counts[present])
    return sorted(chosen), comparable_n


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
    basis: dict[str, Any] = {}
    decisions = identify_videos(ctx, video_ids, only, basis)
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
                    threshold_llr=d.threshold_llr,
                    threshold_from=d.threshold_from,
                    prior_in_gallery=d.prior_in_gallery,
                    gallery_size=d.comparable,
                    gallery_version=d.gallery_version,
                    fusion_method=d.fusion_method,
                )
                for c in d.candidates
            )
    ctx.catalog.finish_run(run_id, "done", {"probes": len(decisions), **basis})
    return [
        {
            "video_id": v,
            "probe": d.probe,
            "decision": d.decision,
            "modalities": d.modalities,
            "threshold_llr": d.threshold_llr,
            "gallery_size": d.comparable,
            "candidates": [c.__dict__ for c in d.candidates],
        }
        for v, d in decisions
    ]
