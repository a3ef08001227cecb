"""`biofuse gallery forget NAME`: erase one identity everywhere biofuse keeps it.

An identity lives in: its catalog rows (identity, enrollments, identify results), its
enrollment rows in the embedding store (every model, migrated copies too), its templates
in every gallery version on disk (and each version's manifest and report), the
thumbnails cached for the tracks it was a candidate for, and the parameters of the
Prefect `enroll` runs that named it (Prefect's database under `{home}/prefect`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.flows.context import Context
from biofuse.flows.migrate import MIGRATED_PREFIX
from filelock import FileLock
from sqlalchemy import delete, select

from biofuse.catalog import Enrollment, GalleryVersion, Identity, Result, Video
from biofuse.errors import GalleryError
from biofuse.serve.thumbnails import cached_paths


def _erase_from_version(folder: Path, name: str) -> dict[str, Any] | None:
    """Rewrite one version folder without `name`; its new manifest, or None if it had none."""
    manifest_file = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, ValueError):
        return None
    if name not in manifest.get("identities", []) and not any(
        name in g.get("identities", []) for g in manifest.get("groups", [])
    ):
        return None
    for entry in manifest["groups"]:
        file = folder / entry["file"]
        with np.load(file, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        keep = arrays["identities"] != name
        arrays["identities"] = arrays["identities"][keep]
        for key in ("templates", "cohort_mean", "cohort_std"):
            arrays[key] = arrays[key][keep]
        partial = file.with_name(f".{file.stem}.{os.getpid()}.npz")
        np.savez(partial, **arrays)
        partial.replace(file)
        entry["identities"] = [n for n in entry.get("identities", []) if n != name]
        entry.get("rows_per_identity", {}).pop(name, None)
        entry["sha256"] = hashlib.sha256(file.read_bytes()).hexdigest()
        manifest.setdefault("template_counts", {})[entry["modality"]] = len(entry["identities"])
    manifest["identities"] = [n for n in manifest.get("identities", []) if n != name]
    partial = manifest_file.with_name(f".manifest.{os.getpid()}.json")
    partial.write_text(json.dumps(manifest, indent=2) + "\n")
    partial.replace(manifest_file)
    for report in ("report.json", "report.md"):  # the rebuild's comparison names identities
        (folder / report).unlink(missing_ok=True)
    return manifest


def _forget_prefect_runs(name: str) -> int:
    """Delete the Prefect `enroll` runs whose parameters name the identity.

    Only where Prefect keeps any: a Prefect server (PREFECT_API_URL) or the local
    database under PREFECT_HOME (the CLI puts it in `{home}/prefect`).
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if not settings.api.url and not (Path(settings.home) / "prefect.db").exists():
        return 0
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    deleted = 0
    with get_client(sync_client=True) as client:
        offset = 0
        while True:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["enroll"])),
                offset=offset,
                limit=200,
            )
            if not runs:
                break
            mine = [r for r in runs if (r.parameters or {}).get("identity") == name]
            for run in mine:
                client.delete_flow_run(run.id)
            deleted += len(mine)
            offset += len(runs) - len(mine)
            if len(runs) < 200:
                break
    database = Path(settings.home) / "prefect.db"
    if deleted and not settings.api.url and database.is_file():
        # the local server's SQLite keeps deleted rows in free pages until vacuumed
        with contextlib.closing(sqlite3.connect(database, timeout=60)) as db:
            db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return deleted


def forget_identity(ctx: Context, name: str, prefect: bool = True) -> dict[str, int]:
    """Erase `name` from the catalog, the store, every gallery version and the caches."""
    person = ctx.catalog.identity(name)
    if person is None:
        raise GalleryError(f"no enrolled identity is named {name!r}")
    with ctx.catalog.session() as s:
        enrolled = s.execute(
            select(Enrollment.modality, Enrollment.model_id, Enrollment.store_key).where(
                Enrollment.identity_id == person.id
            )
        ).all()
        probes = s.execute(
            select(Result.probe_key, Video.path)
            .join(Video, Video.id == Result.video_id)
            .where(Result.identity_id == person.id)
            .distinct()
        ).all()
    report = {"store_rows": 0, "enrollments": len(enrolled)}

    # the store: every row the catalog names, and any row under the identity's key prefixes
    # (a commit whose catalog rows a crash prevented, migrated copies)
    keys = {k for _, _, k in enrolled}
    prefixes = (f"enr:{person.id}:", f"{MIGRATED_PREFIX}enr:{person.id}:")
    for modality, model_id, _rows in ctx.store.groups():
        report["store_rows"] += ctx.store.erase(
            modality, model_id, lambda k: k in keys or k.startswith(prefixes)
        )

    # gallery versions on disk (under the rebuild's lock, so no rebuild races it)
    root = Path(ctx.settings.home) / "galleries"
    versions = 0
    if root.is_dir():
        lock = FileLock(str(root / ".rebuild.lock"), timeout=3600)
        with lock, ctx.catalog.session() as s:
            for row in s.scalars(select(GalleryVersion)):
                manifest = _erase_from_version(Path(row.path), name)
                if manifest is not None:
                    row.manifest = manifest
                    versions += 1
    report["gallery_versions"] = versions

    # thumbnails of the tracks it was a candidate for (a cache: made again on request)
    thumbs = Path(ctx.settings.home) / "thumbnails"
    report["thumbnails"] = 0
    for probe_key, video_path in probes:
        for file in cached_paths(thumbs, probe_key, Path(video_path)):
            if file.is_file():
                file.unlink()
                report["thumbnails"] += 1

    # the catalog last: a crash before here leaves the identity listed, so forget runs again
    with ctx.catalog.session() as s:
        gone = s.execute(delete(Result).where(Result.identity_id == person.id))
        report["results"] = gone.rowcount
        s.execute(delete(Enrollment).where(Enrollment.identity_id == person.id))
        s.execute(delete(Identity).where(Identity.id == person.id))
    if ctx.catalog.engine.dialect.name == "sqlite":  # deleted rows stay in free pages otherwise
        with ctx.catalog.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM")
            c.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    report["prefect_runs"] = _forget_prefect_runs(name) if prefect else 0
    return report
