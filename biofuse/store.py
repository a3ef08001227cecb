"""Zarr v3 embedding store: `{root}/{modality}/{model_id}/` with vectors, quality, keys, units.

Crash safety comes from one rule: rows are written past the `committed` count in
the group attributes, and only then is `committed` advanced (one atomic metadata
write). Readers read rows below it, so a writer killed mid-unit leaves nothing
visible, and the next writer overwrites the orphaned rows. A *unit* (a video's
content hash, an enrollment's media hash) is committed at most once, so
re-running finished work writes nothing.

The root is a local path or any fsspec URL (`s3://bucket/store`, `memory://x`), opened
by zarr's FsspecStore. Credentials and endpoints come from `storage_options` or from
fsspec's own environment variables (e.g. `FSSPEC_S3_ENDPOINT_URL=http://minio:9000`),
so an object store needs no biofuse setting beyond `store_url`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from filelock import FileLock

from biofuse.errors import StoreError
from biofuse.modalities.base import Embeddings

CHUNK_ROWS = 4096


@dataclass(frozen=True)
class StoredRows:
    vectors: np.ndarray
    quality: np.ndarray
    keys: np.ndarray
    units: np.ndarray
    model_id: str

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, keys: set[str] | list[str]) -> StoredRows:
        mask = np.isin(self.keys, np.asarray(list(keys), dtype=self.keys.dtype))
        return StoredRows(
            self.vectors[mask], self.quality[mask], self.keys[mask], self.units[mask], self.model_id
        )

    def as_embeddings(self) -> Embeddings:
        return Embeddings(self.vectors, self.quality, [str(k) for k in self.keys], self.model_id)


def _strings(values: np.ndarray) -> np.ndarray:
    """Zarr's variable-length strings as a plain fixed-width numpy array."""
    return np.array(values.tolist(), dtype=str) if len(values) else np.zeros(0, dtype=str)


def _write_error(root: str, exc: OSError) -> StoreError:
    """What went wrong writing, and what to do; the commit point was not moved."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StoreError(
            f"the store at {root} is full ({exc}); nothing was committed and earlier rows are "
            "intact: free space there or point store_url at a larger volume, then re-run"
        )
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreError(
            f"the store at {root} is not writable ({exc}); nothing was committed: check that "
            "its volume is mounted read-write and its permissions, then re-run"
        )
    return StoreError(f"writing to the store at {root} failed ({exc}); nothing was committed")


def _is_local(root: str) -> bool:
    return "://" not in root


class EmbeddingStore:
    """All embedding rows of one installation, one group per (modality, model)."""

    def __init__(self, root: str | Path, storage_options: dict[str, Any] | None = None) -> None:
        # file:// is a local path: zarr's LocalStore creates folders, fsspec's local one doesn't
        self.root = str(root).removeprefix("file://")
        self.storage_options = storage_options
        self._units: dict[str, tuple[int, set[str]]] = {}  # group -> (committed, units)
        if _is_local(self.root):
            try:
                Path(self.root).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the store folder {self.root}: {exc}; "
                    "check the path and its permissions (store_url)"
                ) from exc

    # -- layout ---------------------------------------------------------------------
    def _path(self, modality: str, model_id: str) -> str:
        return f"{self.root.rstrip('/')}/{modality}/{model_id}"

    def _open_group(self, modality: str, model_id: str, mode: str) -> zarr.Group:
        try:
            return zarr.open_group(
                self._path(modality, model_id), mode=mode, storage_options=self.storage_options
            )
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"cannot open store group {self._path(modality, model_id)}: {exc}"
            ) from exc

    def _lock(self, modality: str, model_id: str) -> FileLock | None:
        """One writer per group: a lock file beside a local store (object stores: one flow)."""
        if not _is_local(self.root):
            return None
        root = Path(self.root)
        lock_dir = root.parent / f"{root.name}.locks"  # outside the Zarr hierarchy
        lock_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_dir / f"{modality}--{model_id}.lock"), timeout=600)

    def groups(self) -> list[tuple[str, str, int]]:
        """(modality, model_id, committed rows) for every group in the store."""
        out = []
        try:
            root = zarr.open_group(self.root, mode="r", storage_options=self.storage_options)
        except FileNotFoundError:
            return out
        for modality, mod_group in root.groups():
            for model_id, group in mod_group.groups():
                out.append((modality, model_id, int(group.attrs.get("committed", 0))))
        return sorted(out)

    # -- writing --------------------------------------------------------------------
    def _require(self, modality: str, model_id: str, dim: int) -> zarr.Group:
        try:
            root = zarr.open_group(self.root, mode="a", storage_options=self.storage_options)
            group = root.require_group(modality).require_group(model_id)
        except OSError as exc:
            raise _write_error(self.root, exc) from exc
        except ValueError as exc:
            raise StoreError(f"cannot create {modality}/{model_id} in {self.root}: {exc}") from exc
        if "committed" not in group.attrs:
            group.attrs.update(
                {"committed": 0, "dim": dim, "modality": modality, "model_id": model_id}
            )
        elif int(group.attrs["dim"]) != dim:
            raise StoreError(
                f"{modality}/{model_id} holds {group.attrs['dim']}-d rows, got {dim}-d"
            )
        specs = {
            "vectors": ((0, dim), (CHUNK_ROWS, dim), "float32", 0.0),
            "quality": ((0,), (CHUNK_ROWS,), "float32", 0.0),
            "keys": ((0,), (CHUNK_ROWS,), str, ""),
            "units": ((0,), (CHUNK_ROWS,), str, ""),
        }
        for name, (shape, chunks, dtype, fill) in specs.items():
            if name not in group:
                group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=fill)
        return group

    def _committed_units(self, group: zarr.Group, cache_key: str) -> set[str]:
        committed = int(group.attrs["committed"])
        cached = self._units.get(cache_key)
        if cached is None or cached[0] != committed:
            cached = (committed, set(group["units"][:committed].tolist()))
            self._units[cache_key] = cached
        return cached[1]

    def has_unit(self, modality: str, model_id: str, unit: str) -> bool:
        try:
            group = self._open_group(modality, model_id, mode="r")
        except FileNotFoundError:
            return False
        if "committed" not in group.attrs:
            return False
        return unit in self._committed_units(group, f"{modality}/{model_id}")

    def commit(self, modality: str, unit: str, rows: Embeddings) -> int:
        """Append all rows of one unit and make them visible at once.

        Returns the number of rows written: 0 when the unit was committed before
        (idempotent re-runs), or when there is nothing to write.
        """
        if len(rows) == 0:
            return 0
        lock = None
        try:
            lock = self._lock(modality, rows.model_id)
            if lock is not None:
                lock.acquire()
            group = self._require(modality, rows.model_id, rows.dim)
            if unit in self._committed_units(group, f"{modality}/{rows.model_id}"):
                return 0
            start = int(group.attrs["committed"])
            stop = start + len(rows)
            capacity = group["keys"].shape[0]
            if stop > capacity:
                new_capacity = max(stop, 2 * capacity, CHUNK_ROWS)
                group["vectors"].resize((new_capacity, rows.dim))
                for name in ("quality", "keys", "units"):
                    group[name].resize((new_capacity,))
            group["vectors"][start:stop] = np.asarray(rows.vectors, np.float32)
            group["quality"][start:stop] = np.asarray(rows.quality, np.float32)
            group["keys"][start:stop] = np.asarray(rows.keys, dtype=str)
            group["units"][start:stop] = np.asarray([unit] * len(rows), dtype=str)
            group.attrs["committed"] = stop  # the commit point
            return len(rows)
        except OSError as exc:
            raise _write_error(self.root, exc) from exc
        finally:
            if lock is not None and lock.is_locked:
                lock.release()

    def erase(self, modality: str, model_id: str, drop: Callable[[str], bool]) -> int:
        """Remove every committed row whose key `drop` selects (`biofuse gallery forget`).

        The rows kept move up in their order, the commit point comes down to them, and
        the freed rows are overwritten with blanks, so no erased vector stays on disk in
        the group. Returns how many rows were erased. Writers wait on the group's lock;
        run it while no `identify` reads the group.
        """
        lock = None
        try:
            lock = self._lock(modality, model_id)
            if lock is not None:
                lock.acquire()
            try:
                group = self._open_group(modality, model_id, mode="r+")
            except FileNotFoundError:
                return 0
            committed = int(group.attrs.get("committed", 0))
            keys = _strings(group["keys"][:committed])
            keep = np.array([not drop(str(k)) for k in keys], bool)
            kept = int(keep.sum())
            if kept == committed:
                return 0
            vectors = np.asarray(group["vectors"][:committed])[keep]
            quality = np.asarray(group["quality"][:committed])[keep]
            units = _strings(group["units"][:committed])[keep]
            group["vectors"][:kept] = vectors
            group["quality"][:kept] = quality
            group["keys"][:kept] = keys[keep]
            group["units"][:kept] = units
            group.attrs["committed"] = kept  # the commit point
            gone = committed - kept
            group["vectors"][kept:committed] = np.zeros((gone, vectors.shape[1]), np.float32)
            group["quality"][kept:committed] = np.zeros(gone, np.float32)
            group["keys"][kept:committed] = np.asarray([""] * gone, dtype=str)
            group["units"][kept:committed] = np.asarray([""] * gone, dtype=str)
            self._units.pop(f"{modality}/{model_id}", None)
            return gone
        except OSError as exc:
            raise _write_error(self.root, exc) from exc
        finally:
            if lock is not None and lock.is_locked:
                lock.release()

    # -- reading --------------------------------------------------------------------
    def read(self, modality: str, model_id: str, keys: list[str] | None = None) -> StoredRows:
        """Committed rows of one group (optionally only `keys`); empty if the group is absent."""
        try:
            group = self._open_group(modality, model_id, mode="r")
            committed = int(group.attrs.get("committed", 0))
        except FileNotFoundError:
            committed = 0
        if committed == 0:
            empty = np.zeros(0, dtype=str)
            return StoredRows(
                np.zeros((0, 0), np.float32), np.zeros(0, np.float32), empty, empty, model_id
            )
        rows = StoredRows(
            group["vectors"][:committed],
            group["quality"][:committed],
            _strings(group["keys"][:committed]),
            _strings(group["units"][:committed]),
            model_id,
        )
        return rows.select(keys) if keys is not None else rows
