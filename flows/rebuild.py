"""Prefect flow `rebuild_gallery`: the nightly, versioned, atomically switched gallery.

A gallery version is a folder `{home}/galleries/v{N}/` holding one `.npz` of
templates (and cohort statistics) per (modality, model), a FAISS index over the
templates of each inner-product (cosine) model (`.faiss`, fusion/search.py), plus
`manifest.json` (model ids, template counts, calibration, file checksums). The folder is built
under a temporary name and renamed into place complete; only then does one
catalog transaction move the `current` flag to it. Readers resolve the flag once
and read that folder only, so they see the old gallery or the new one, never a
mixture. Older folders are deleted after the switch, keeping the newest N.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.flows.context import Context
from biofuse.fusion.calibration import LinearCalibration, load_default
from biofuse.fusion.normalize import CohortNormaliser, choose_cohort
from biofuse.fusion.scores import Metric, metric_for_model, similarity
from biofuse.fusion.search import (
    GalleryIndex,
    choose_kind,
    file_sha256,
    indexed,
    read_index,
    write_index,
)
from biofuse.fusion.templates import build_templates
from filelock import FileLock
from prefect import flow
from sqlalchemy import delete, select, update

from biofuse.catalog import Catalog, Enrollment, GalleryVersion, Identity, utcnow
from biofuse.errors import BiofuseError, GalleryError, MediaError
from biofuse.store import StoredRows

BUILDER = "biofuse-gallery-2"  # bump when the way templates are built changes: forces a rebuild
COHORT_SIZE = 300  # cohort rows per group (as biofuse.flows.gallery.pick_cohort draws them)
# scores at which calibration shifts are measured, per metric (gait-euclidean: minus distance)
SHIFT_GRIDS: dict[str, np.ndarray] = {
    "cosine": np.linspace(-0.2, 1.0, 61),
    "mean-cosine": np.linspace(-0.2, 1.0, 61),
    "gait-euclidean": np.linspace(-3.0, 0.0, 61),
}


# -- reading a version ---------------------------------------------------------------------
@dataclass(frozen=True)
class GalleryGroup:
    """The templates of one (modality, model) in a gallery version."""

    modality: str
    model_id: str
    identities: list[str]
    templates: np.ndarray  # (I, dim) unit rows
    cohort_mean: np.ndarray  # (I,) each template's mean cosine to the cohort
    cohort_std: np.ndarray  # (I,)
    cohort: np.ndarray  # (C, dim) the cohort itself (probe-side statistics need it); C may be 0
    index_file: Path | None = None  # the FAISS index over `templates` (cosine models only)
    index_kind: str | None = None


@dataclass(frozen=True)
class GallerySnapshot:
    """One complete gallery version, as a reader resolved it."""

    number: int
    path: Path
    manifest: dict[str, Any]
    groups: dict[tuple[str, str], GalleryGroup]

    def templates(self, modality: str, model_id: str) -> tuple[list[str], np.ndarray] | None:
        group = self.groups.get((modality, model_id))
        return None if group is None else (list(group.identities), group.templates)

    def search_index(self, modality: str, model_id: str) -> GalleryIndex | None:
        """The version's index over this group's templates (checksum verified on read), or
        None for a metric searched by brute force or a version written without one."""
        group = self.groups.get((modality, model_id))
        if group is None or group.index_file is None or group.index_kind is None:
            return None
        return GalleryIndex(group.index_kind, read_index(group.index_file), group.templates)

    def normaliser(self, modality: str, model_id: str) -> CohortNormaliser | None:
        """s-norm fitted on this version's cohort; None without a cohort outside the gallery.

        identify does not apply it (benchmarks/score_normalisation.py: no worthwhile gain for
        faces, a cohort-dependent one for voices); it is here for analysts and for re-measuring.
        """
        group = self.groups.get((modality, model_id))
        if group is None or len(group.cohort) == 0:
            return None
        norm = CohortNormaliser("s", cohort_=group.cohort)
        norm.template_stats_ = (group.cohort_mean, group.cohort_std)
        return norm

    def calibration(self, modality: str) -> LinearCalibration | None:
        """The calibration fitted (or kept) by the rebuild; a seam for fusion to adopt."""
        entry = self.manifest.get("calibration", {}).get(modality)
        if entry is None:
            return None
        return LinearCalibration(
            entry["slope"], entry["offset"], entry["fitted_on"], entry["max_abs_llr"]
        )


def galleries_dir(ctx: Context) -> Path:
    return Path(ctx.settings.home) / "galleries"


def _file_sha256(path: Path) -> str:
    return file_sha256(path)


def read_version(path: Path, number: int, verify: bool = True) -> GallerySnapshot:
    """Load a version folder; with `verify`, every file must match its manifest checksum."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise GalleryError(
            f"gallery version {number} at {path} is unreadable ({exc}); "
            "run `biofuse gallery rebuild` to write a new one"
        ) from exc
    groups = {}
    for entry in manifest["groups"]:
        file = path / entry["file"]
        if verify and _file_sha256(file) != entry["sha256"]:
            raise GalleryError(f"{file} does not match its manifest checksum; rebuild the gallery")
        index = entry.get("index")
        index_file = None if index is None else path / index["file"]
        if verify and index_file is not None and _file_sha256(index_file) != index["sha256"]:
            raise GalleryError(
                f"{index_file} does not match its manifest checksum; rebuild the gallery"
            )
        with np.load(file, allow_pickle=False) as data:
            groups[(entry["modality"], entry["model_id"])] = GalleryGroup(
                entry["modality"],
                entry["model_id"],
                [str(n) for n in data["identities"]],
                data["templates"],
                data["cohort_mean"],
                data["cohort_std"],
                data["cohort"],
                index_file,
                None if index is None else index["kind"],
            )
    return GallerySnapshot(number, path, manifest, groups)


def current_gallery(catalog: Catalog) -> GallerySnapshot | None:
    """The current version (pointer resolved once), or None before the first rebuild."""
    with catalog.session() as s:
        row = s.scalar(select(GalleryVersion).where(GalleryVersion.current.is_(True)))
    if row is None:
        return None
    return read_version(Path(row.path), row.number)


# -- what the rebuild starts from ----------------------------------------------------------
@dataclass(frozen=True)
class StaleMedia:
    """Enrollment media whose rows for `modality` were made only by other models."""

    identity: str
    path: str
    media_hash: str
    modality: str
    old_model_ids: tuple[str, ...]


def stale_media(catalog: Catalog, model_ids: dict[str, str]) -> list[StaleMedia]:
    with catalog.session() as s:
        rows = s.execute(
            select(Identity.name, Enrollment.media_path, Enrollment.media_hash)
            .add_columns(Enrollment.modality, Enrollment.model_id)
            .join(Identity, Identity.id == Enrollment.identity_id)
        ).all()
    seen: dict[tuple[str, str, str, str], set[str]] = {}
    for name, path, digest, modality, model_id in rows:
        seen.setdefault((name, path, digest, modality), set()).add(model_id)
    return [
        StaleMedia(name, path, digest, modality, tuple(sorted(models)))
        for (name, path, digest, modality), models in sorted(seen.items())
        if modality in model_ids and model_ids[modality] not in models
    ]


def _enrollment_rows(
    catalog: Catalog, modality: str, model_id: str
) -> list[tuple[str, str, float]]:
    """(identity, store key, quality) of every enrollment row made by this model, sorted."""
    with catalog.session() as s:
        rows = s.execute(
            select(Identity.name, Enrollment.store_key, Enrollment.quality)
            .join(Identity, Identity.id == Enrollment.identity_id)
            .where(Enrollment.modality == modality, Enrollment.model_id == model_id)
            .order_by(Identity.name, Enrollment.store_key)
        ).all()
    return [(n, k, float(q or 0.0)) for n, k, q in rows]


@dataclass(frozen=True)
class GroupInputs:
    """What one (modality, model) gallery group is built from."""

    modality: str
    model_id: str
    enrollments: list[tuple[str, str, float]]  # (identity, store key, quality), sorted
    gallery: StoredRows  # the enrollment rows' vectors
    cohort_keys: list[str]  # a seeded draw of store rows outside the gallery (probes seen)
    cohort: np.ndarray


def group_inputs(ctx: Context, modality: str, model_id: str) -> GroupInputs:
    enrollments = _enrollment_rows(ctx.catalog, modality, model_id)
    stored = ctx.store.read(modality, model_id)
    gallery_keys = {k for _n, k, _q in enrollments}
    chosen = choose_cohort(stored.keys, gallery_keys, COHORT_SIZE) if len(stored) else []
    return GroupInputs(
        modality,
        model_id,
        enrollments,
        stored.select(list(gallery_keys)),
        [str(k) for k in stored.keys[chosen]] if len(chosen) else [],
        stored.vectors[chosen] if len(chosen) else np.zeros((0, 0), np.float32),
    )


def input_fingerprint(
    model_ids: dict[str, str], inputs: list[GroupInputs], settings_part: dict[str, Any]
) -> str:
    """sha256 of everything a version is built from: equal fingerprints, equal galleries."""
    payload = {
        "builder": BUILDER,
        "models": model_ids,
        "rows": {g.modality: [[n, k, round(q, 6)] for n, k, q in g.enrollments] for g in inputs},
        "cohort": {g.modality: g.cohort_keys for g in inputs},
        "settings": settings_part,
        "default_calibration": {m: asdict(load_default(i)) for m, i in sorted(model_ids.items())},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# -- fitting -------------------------------------------------------------------------------
def cohort_statistics(
    templates: np.ndarray, cohort: np.ndarray, metric: Metric = "cosine"
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per template: mean and std of its scores against the cohort (z-norm statistics).

    The cohort is store rows outside the gallery (people seen in the archive),
    fitted with biofuse.fusion.normalize.CohortNormaliser. Before any video was
    processed there is none, and the other identities' templates stand in.
    """
    if len(cohort):
        norm = CohortNormaliser("s", metric=metric).fit(templates, cohort)
        assert norm.template_stats_ is not None
        mean, std = norm.template_stats_
        source = f"{len(cohort)} store rows outside the gallery"
        return mean.astype(np.float32), std.astype(np.float32), source
    mean, std = gallery_cohort_statistics(templates, metric)
    return mean, std, "the other identities' templates (no rows outside the gallery yet)"


def gallery_cohort_statistics(
    templates: np.ndarray, metric: Metric = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each template's score to every other template; (0, 1) alone."""
    n = len(templates)
    if n < 2:
        return np.zeros(n, np.float32), np.ones(n, np.float32)
    scores = similarity(templates, templates, metric).astype(np.float64)
    others = ~np.eye(n, dtype=bool)
    cohort = scores[others].reshape(n, n - 1)
    return cohort.mean(axis=1).astype(np.float32), cohort.std(axis=1).astype(np.float32)


def enrollment_pairs(
    vectors: np.ndarray, quality: np.ndarray, labels: list[str], metric: Metric = "cosine"
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels of each enrollment row against every identity's template.

    The row's own identity is scored against a template built without that row
    (leave-one-out), so a genuine score is never a row compared with itself;
    identities with one row give impostor pairs only.
    """
    names, templates = build_templates(vectors, quality, labels, metric=metric)
    scores, targets = [], []
    labels_arr = np.asarray(labels)
    for i, (row, own) in enumerate(zip(vectors, labels)):
        others = [j for j, n in enumerate(names) if n != own]
        if others:
            scores.extend(similarity(row[None], templates[others], metric)[0].tolist())
            targets.extend([0] * len(others))
        mates = np.flatnonzero((labels_arr == own) & (np.arange(len(labels)) != i))
        if len(mates):
            _, loo = build_templates(
                vectors[mates], quality[mates], [own] * len(mates), metric=metric
            )
            scores.append(float(similarity(row[None], loo, metric)[0, 0]))
            targets.append(1)
    return np.asarray(scores, np.float64), np.asarray(targets, int)


def fit_calibration(
    model_id: str, scores: np.ndarray, labels: np.ndarray, min_pairs: int
) -> tuple[LinearCalibration, dict[str, int]]:
    """Refit the score -> LLR map on enrollment pairs, or keep the default with a reason.

    Seam: when fusion/ offers a fitting function for cohort-normalised scores,
    call it here; the manifest records whichever calibration was used.
    """
    n_gen, n_imp = int(labels.sum()), int(len(labels) - labels.sum())
    counts = {"genuine_pairs": n_gen, "impostor_pairs": n_imp}
    if min(n_gen, n_imp) < min_pairs:
        kept = load_default(model_id)
        kept.fitted_on = (
            f"{kept.fitted_on} (kept: {n_gen} genuine / {n_imp} impostor enrollment pairs, "
            f"fewer than {min_pairs} per class)"
        )
        return kept, counts
    fitted = LinearCalibration().fit(scores, labels)
    fitted.fitted_on = f"gallery enrollment pairs: {n_gen} genuine, {n_imp} impostor"
    return fitted, counts


def calibration_shift(
    before: LinearCalibration | None, after: LinearCalibration, metric: Metric = "cosine"
) -> float:
    """Largest change of the LLR over the metric's score range (0 when nothing changed)."""
    if before is None:
        return float("nan")
    grid = SHIFT_GRIDS[metric]
    return float(np.max(np.abs(after.transform(grid) - before.transform(grid))))


# -- writing a version ---------------------------------------------------------------------
@dataclass
class BuiltGroup:
    group: GalleryGroup
    rows_per_identity: dict[str, int]
    calibration: LinearCalibration
    pair_counts: dict[str, int]
    cohort_source: str


def build_group(inputs: GroupInputs, min_pairs: int) -> BuiltGroup | None:
    if not inputs.enrollments:
        return None
    owner = {k: n for n, k, _q in inputs.enrollments}
    stored = inputs.gallery
    labels = [owner[str(k)] for k in stored.keys]
    metric = metric_for_model(inputs.model_id)  # part-Euclidean gait templates stay raw
    names, templates = build_templates(stored.vectors, stored.quality, labels, metric=metric)
    mean, std, cohort_source = cohort_statistics(templates, inputs.cohort, metric)
    scores, targets = enrollment_pairs(stored.vectors, stored.quality, labels, metric)
    calibration, counts = fit_calibration(inputs.model_id, scores, targets, min_pairs)
    per_identity = {n: labels.count(n) for n in names}
    group = GalleryGroup(
        inputs.modality,
        inputs.model_id,
        names,
        templates.astype(np.float32),
        mean,
        std,
        inputs.cohort.astype(np.float32),
    )
    return BuiltGroup(group, per_identity, calibration, counts, cohort_source)


def _write_version(
    folder: Path,
    number: int,
    fingerprint: str,
    built: list[BuiltGroup],
    index_setting: str = "auto",
    index_min_rows: int = 200_000,
) -> dict[str, Any]:
    """Everything of version `number` into `folder` (not yet visible to readers), the
    search index of each cosine-metric group included: it switches with the version."""
    folder.mkdir(parents=True)
    groups, calibration = [], {}
    for b in built:
        g = b.group
        file = f"{g.modality}--{g.model_id}.npz"
        np.savez(
            folder / file,
            identities=np.asarray(g.identities, dtype=str),
            templates=g.templates,
            cohort_mean=g.cohort_mean,
            cohort_std=g.cohort_std,
            cohort=g.cohort,
        )
        entry: dict[str, Any] = {
            "modality": g.modality,
            "model_id": g.model_id,
            "file": file,
            "sha256": _file_sha256(folder / file),
            "identities": g.identities,
            "rows_per_identity": b.rows_per_identity,
            "cohort": b.cohort_source,
        }
        if indexed(metric_for_model(g.model_id)) and len(g.identities):
            kind = choose_kind(len(g.identities), index_setting, index_min_rows)
            index_file = f"{g.modality}--{g.model_id}.faiss"
            index = GalleryIndex.build(g.templates, kind).index
            entry["index"] = {
                "file": index_file,
                "kind": kind,
                "rows": len(g.identities),
                "sha256": write_index(index, folder / index_file),
            }
        groups.append(entry)
        calibration[g.modality] = {**asdict(b.calibration), **b.pair_counts}
    manifest = {
        "number": number,
        "created_at": utcnow().isoformat(),
        "fingerprint": fingerprint,
        "builder": BUILDER,
        "model_ids": {b.group.modality: b.group.model_id for b in built},
        "template_counts": {b.group.modality: len(b.group.identities) for b in built},
        "identities": sorted({n for b in built for n in b.group.identities}),
        "groups": groups,
        "calibration": calibration,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _switch(ctx: Context, number: int, path: Path, fingerprint: str, manifest: dict) -> None:
    """The one transaction that makes version `number` current."""
    with ctx.catalog.session() as s:
        s.execute(
            update(GalleryVersion).where(GalleryVersion.current.is_(True)).values(current=False)
        )
        s.add(
            GalleryVersion(
                number=number,
                path=str(path),
                fingerprint=fingerprint,
                current=True,
                manifest=manifest,
            )
        )


def prune_versions(ctx: Context, keep: int) -> list[int]:
    """Delete all but the newest `keep` versions (never the current one): rows, then folders."""
    with ctx.catalog.session() as s:
        rows = list(s.scalars(select(GalleryVersion).order_by(GalleryVersion.number.desc())))
        old = [r for r in rows[keep:] if not r.current]
        s.execute(delete(GalleryVersion).where(GalleryVersion.id.in_([r.id for r in old])))
    for r in old:
        shutil.rmtree(r.path, ignore_errors=True)
    return sorted(r.number for r in old)


# -- the report ----------------------------------------------------------------------------
def _compare(previous: GallerySnapshot | None, built: list[BuiltGroup]) -> dict[str, Any]:
    before_ids = set() if previous is None else set(previous.manifest.get("identities", []))
    after_ids = {n for b in built for n in b.group.identities}
    updated = []
    for b in built:
        g = b.group
        old_group = None
        if previous is not None:
            old_group = next(
                (o for o in previous.groups.values() if o.modality == g.modality), None
            )
        for i, name in enumerate(g.identities):
            if old_group is None or name not in old_group.identities:
                reason = "new"
            elif old_group.model_id != g.model_id:
                reason = f"model changed from {old_group.model_id}"
            else:
                old = old_group.templates[old_group.identities.index(name)]
                if np.allclose(old, g.templates[i], atol=1e-6):
                    continue
                reason = "evidence changed"
            updated.append(
                {"identity": name, "modality": g.modality, "model_id": g.model_id, "why": reason}
            )
    shifts = {}
    for b in built:
        m = b.group.modality
        before = previous.calibration(m) if previous is not None else None
        if before is None:
            before = load_default(b.group.model_id)
        shifts[m] = {
            "before": {"slope": before.slope, "offset": before.offset},
            "after": {"slope": b.calibration.slope, "offset": b.calibration.offset},
            "max_abs_llr_change": calibration_shift(
                before, b.calibration, metric_for_model(b.group.model_id)
            ),
            "fitted_on": b.calibration.fitted_on,
        }
    return {
        "identities_added": sorted(after_ids - before_ids),
        "identities_removed": sorted(before_ids - after_ids),
        "templates_updated": updated,
        "calibration_shift": shifts,
    }


def report_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Gallery rebuild: version {report['version']}", ""]
    if not report["changed"]:
        lines.append(f"Nothing changed: {report['reason']}.")
    else:
        prev = report["previous"]
        lines.append(f"Previous version: {prev if prev is not None else 'none'}.")
        lines.append(f"Templates per modality: {report['template_counts']}.")
        lines.append(f"Identities added: {', '.join(report['identities_added']) or 'none'}.")
        lines.append(f"Identities removed: {', '.join(report['identities_removed']) or 'none'}.")
        lines += ["", "| identity | modality | model | why |", "|---|---|---|---|"]
        lines += [
            f"| {u['identity']} | {u['modality']} | {u['model_id']} | {u['why']} |"
            for u in report["templates_updated"]
        ]
        lines += ["", "| modality | slope before -> after | offset before -> after | max dLLR |"]
        lines.append("|---|---|---|---|")
        for m, s in report["calibration_shift"].items():
            lines.append(
                f"| {m} | {s['before']['slope']:.3f} -> {s['after']['slope']:.3f} | "
                f"{s['before']['offset']:.3f} -> {s['after']['offset']:.3f} | "
                f"{s['max_abs_llr_change']:.3f} |"
            )
        lines.append(f"\nPruned versions: {report['pruned'] or 'none'}.")
    if report["re_extracted"]:
        lines.append(
            f"\nRe-extracted with the current models: {len(report['re_extracted'])} files."
        )
    for path, reason in report["errors"].items():
        lines.append(f"- could not re-extract {path}: {reason}")
    return "\n".join(lines) + "\n"


# -- the rebuild -----------------------------------------------------------------------------
def rebuild(ctx: Context, keep_versions: int | None = None) -> dict[str, Any]:
    """Re-extract stale enrollments, rebuild templates and calibration, switch if changed."""
    from biofuse.flows.gallery import (
        enroll_media,  # biofuse.flows.gallery reads versions through this module
    )

    started = time.perf_counter()
    keep = keep_versions or ctx.settings.gallery_keep_versions
    model_ids = {m: ctx.model_id(m) for m in ctx.settings.modalities}
    root = galleries_dir(ctx)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".rebuild.lock"), timeout=3600):
        _remove_orphans(ctx, root)
        re_extracted: dict[str, dict[str, int]] = {}
        errors: dict[str, str] = {}
        for stale in stale_media(ctx.catalog, model_ids):
            if stale.path in re_extracted or stale.path in errors:
                continue
            try:
                if not Path(stale.path).is_file():
                    raise MediaError(f"{stale.path}: the enrollment file is gone")
                re_extracted[stale.path] = enroll_media(ctx, stale.identity, Path(stale.path))
            except BiofuseError as exc:
                errors[stale.path] = str(exc)
        min_pairs = ctx.settings.gallery_min_calibration_pairs
        inputs = [group_inputs(ctx, m, i) for m, i in model_ids.items()]
        index_part = {
            "index": ctx.settings.gallery_index,
            "index_min_rows": ctx.settings.gallery_index_min_rows,
        }
        fingerprint = input_fingerprint(model_ids, inputs, {"min_pairs": min_pairs, **index_part})
        with ctx.catalog.session() as s:
            current = s.scalar(select(GalleryVersion).where(GalleryVersion.current.is_(True)))
            last = s.scalar(select(GalleryVersion.number).order_by(GalleryVersion.number.desc()))
        base = {"re_extracted": re_extracted, "errors": errors, "fingerprint": fingerprint}
        if current is not None and current.fingerprint == fingerprint:
            return {
                **base,
                "changed": False,
                "version": current.number,
                "reason": "the enrollment rows, cohort and models are those of the current version",
                "elapsed_s": round(time.perf_counter() - started, 3),
            }
        built = [g for i in inputs if (g := build_group(i, min_pairs)) is not None]
        if not built:
            raise GalleryError("no enrollment rows for the configured models: enroll first")
        previous = current_gallery(ctx.catalog)
        number = max([last or 0, *(_number(p) for p in root.glob("v*"))]) + 1
        partial = root / f".partial-{uuid.uuid4().hex}"
        manifest = _write_version(partial, number, fingerprint, built, *index_part.values())
        final = root / f"v{number}"
        partial.rename(final)  # complete on disk before any reader can be pointed at it
        _switch(ctx, number, final, fingerprint, manifest)
        pruned = prune_versions(ctx, keep)
        report = {
            **base,
            "changed": True,
            "version": number,
            "previous": previous.number if previous is not None else None,
            "path": str(final),
            "template_counts": manifest["template_counts"],
            "model_ids": manifest["model_ids"],
            **_compare(previous, built),
            "pruned": pruned,
            "elapsed_s": round(time.perf_counter() - started, 3),
        }
        # the report sits beside the version; readers never read it, so it may come last
        (final / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (final / "report.md").write_text(report_markdown(report))
        return report


def _remove_orphans(ctx: Context, root: Path) -> None:
    """Folders a crashed rebuild left: half-written ones, and complete ones never switched to.

    No reader can hold them: readers only follow catalog rows. Runs under the rebuild lock.
    """
    with ctx.catalog.session() as s:
        known = {Path(p).name for p in s.scalars(select(GalleryVersion.path))}
    for folder in [*root.glob(".partial-*"), *root.glob("v*")]:
        if folder.is_dir() and folder.name not in known:
            shutil.rmtree(folder, ignore_errors=True)


def _number(path: Path) -> int:
    return int(path.name[1:]) if path.name[1:].isdigit() else 0


@flow(name="rebuild_gallery")
def rebuild_gallery(
    config_path: str | None = None, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Nightly: bring every template to the current models and switch to the new gallery."""
    ctx = Context.open(config_path, **(overrides or {}))
    run_id = ctx.catalog.start_run("rebuild", {})
    try:
        report = rebuild(ctx)
    except BiofuseError as exc:
        ctx.catalog.finish_run(run_id, "failed", {"error": str(exc)})
        raise
    ctx.catalog.finish_run(
        run_id,
        "done",
        {k: report[k] for k in ("changed", "version", "fingerprint") if k in report},
    )
    return report
