"""`biofuse gallery migrate`: carry a gallery across a model upgrade until it is re-extracted.

Enrollment rows of the old model are mapped into the new model's space (fusion/migrate.py)
and written as new store rows and enrollments under the new model id. They are marked as
migrated by their store keys (`mig:` + the original key) and store unit, so re-extraction
or a later clean-up can tell them apart; the map is saved beside the home folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from biofuse.flows.context import Context
from biofuse.fusion.migrate import EmbeddingMap, MapMethod
from biofuse.modalities.base import Embeddings
from sqlalchemy import select

from biofuse.catalog import Enrollment
from biofuse.errors import GalleryError

MIGRATED_PREFIX = "mig:"
MIN_PAIRS = 10


def paired_rows(
    ctx: Context, modality: str, source: str, target: str
) -> tuple[np.ndarray, np.ndarray]:
    """Rows stored under both models with the same key (the same sample embedded twice)."""
    a, b = ctx.store.read(modality, source), ctx.store.read(modality, target)
    common = np.intersect1d(a.keys, b.keys)
    common = common[~np.char.startswith(common.astype(str), MIGRATED_PREFIX)]
    ia = {k: i for i, k in enumerate(a.keys)}
    ib = {k: i for i, k in enumerate(b.keys)}
    return (
        a.vectors[[ia[k] for k in common]] if len(common) else np.zeros((0, 0)),
        b.vectors[[ib[k] for k in common]] if len(common) else np.zeros((0, 0)),
    )


def migrate_gallery(
    ctx: Context,
    modality: str,
    source: str,
    target: str,
    embedding_map: EmbeddingMap | None = None,
    method: MapMethod = "ridge",
    alpha: float = 1.0,
) -> dict[str, Any]:
    """Map every `source` enrollment lacking a `target` one; fit the map on paired rows."""
    if embedding_map is None:
        x, y = paired_rows(ctx, modality, source, target)
        if len(x) < MIN_PAIRS:
            raise GalleryError(
                f"only {len(x)} {modality} samples are stored under both {source} and {target}; "
                f"a map needs at least {MIN_PAIRS}: embed some archive with the new model first "
                "(`biofuse process` with the new model configured), or pass --map FILE"
            )
        embedding_map = EmbeddingMap(method, alpha, source, target).fit(x, y)
        embedding_map.save(ctx.settings.home / "maps" / f"{modality}_{source}_to_{target}")
    with ctx.catalog.session() as s:
        old = list(
            s.scalars(
                select(Enrollment).where(
                    Enrollment.modality == modality, Enrollment.model_id == source
                )
            )
        )
        have = {
            (e.identity_id, e.media_hash)
            for e in s.scalars(select(Enrollment).where(Enrollment.model_id == target))
        }
        todo = [
            (e.identity_id, e.media_path, e.media_hash, e.store_key, e.quality)
            for e in old
            if (e.identity_id, e.media_hash) not in have
        ]
    if not todo:
        return {"migrated": 0, "map": embedding_map.report_}
    rows = ctx.store.read(modality, source).select([t[3] for t in todo])
    index = {str(k): i for i, k in enumerate(rows.keys)}
    todo = [t for t in todo if t[3] in index]
    vectors = embedding_map.transform(rows.vectors[[index[t[3]] for t in todo]])
    keys = [MIGRATED_PREFIX + t[3] for t in todo]
    quality = np.array([t[4] or 0.0 for t in todo], np.float32)
    unit = f"migrate:{source}->{target}:{len(keys)}:{keys[0]}"
    ctx.store.commit(modality, unit, Embeddings(vectors, quality, keys, target))
    with ctx.catalog.session() as s:
        s.add_all(
            Enrollment(
                identity_id=ident,
                media_path=path,
                media_hash=digest,
                modality=modality,
                model_id=target,
                store_key=key,
                quality=float(q),
            )
            for (ident, path, digest, _, _), key, q in zip(todo, keys, quality, strict=True)
        )
    return {"migrated": len(keys), "map": embedding_map.report_}


def load_map(path: Path) -> EmbeddingMap:
    return EmbeddingMap.load(path)
