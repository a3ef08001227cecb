"""Gallery search with FAISS: a shortlist of candidate templates per probe.

Only inner-product metrics go through an index ("cosine": unit templates, "mean-cosine":
the quality-weighted mean of unit rows, left unnormalised); a probe is normalised before
the search, so the index's inner product is the score `biofuse.fusion.scores.similarity` gives.
Part-averaged Euclidean (gait) is not an inner product and stays brute force.

Index kinds (setting `gallery_index`):
  * exact  - IndexFlatIP: every template, exact scores (memory = the float32 templates);
  * hnsw   - IndexHNSWFlat (inner product): graph search, float32 rows kept;
  * ivfpq  - IndexIVFPQ: inverted lists of product-quantised codes (64 bytes per row
             instead of 2 KB); its scores are approximate, so callers rescore the
             shortlist exactly against the templates (`GalleryIndex.shortlist` does);
  * auto   - exact below `gallery_index_min_rows` templates, hnsw at or above.

The shortlist is always rescored exactly: an index only decides which templates are
looked at, never the scores that reach calibration and fusion.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from biofuse.modalities.base import l2_normalise

IndexKind = Literal["auto", "exact", "hnsw", "ivfpq"]
INNER_PRODUCT_METRICS = frozenset({"cosine", "mean-cosine"})
DEFAULT_MIN_ROWS = 200_000  # auto: exact below, hnsw from here (benchmarks/gallery_search_scale)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 80, 128
IVF_PQ_BYTES = 64  # PQ sub-quantisers (8 bits each): 64 bytes per row
IVF_NPROBE = 32


def indexed(metric: str) -> bool:
    """Whether templates compared with `metric` can be searched through an index."""
    return metric in INNER_PRODUCT_METRICS


def choose_kind(rows: int, setting: str = "auto", min_rows: int = DEFAULT_MIN_ROWS) -> str:
    if setting not in ("auto", "exact", "hnsw", "ivfpq"):
        raise ValueError(f"gallery_index {setting!r}: use auto, exact, hnsw or ivfpq")
    if setting != "auto":
        return setting
    return "exact" if rows < min_rows else "hnsw"


def _faiss():  # type: ignore[no-untyped-def]
    import faiss  # imported on first use: the CLI and small galleries never pay for it

    return faiss


def _ivf_lists(rows: int) -> int:
    """About sqrt(n) inverted lists, at least 1, and at most rows / 39 (k-means needs
    ~39 training points per centroid)."""
    return int(max(1, min(np.sqrt(rows), rows // 39)))


def build_index(templates: np.ndarray, kind: str, seed: int = 0):  # type: ignore[no-untyped-def]
    """A FAISS index over `templates` (float32, rows as the metric compares them)."""
    faiss = _faiss()
    x = np.ascontiguousarray(templates, dtype=np.float32)
    n, dim = x.shape
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "ivfpq":
        m = (
            IVF_PQ_BYTES
            if dim % IVF_PQ_BYTES == 0
            else next(d for d in (32, 16, 8, 4, 2, 1) if dim % d == 0)
        )
        bits = 8 if n >= 256 * 39 else max(1, int(np.log2(max(2, n // 39))))
        quantiser = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFPQ(quantiser, dim, _ivf_lists(n), m, bits, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed
        index.cp.niter = 10
        sample = x
        cap = max(64 * index.nlist, 256 * 39)  # enough for k-means and the PQ's 256 centroids
        if n > cap:  # train on a seeded draw: k-means and PQ need far fewer rows than a gallery
            rng = np.random.default_rng(seed)
            sample = x[np.sort(rng.choice(n, cap, replace=False))]
        index.train(sample)
        index.nprobe = min(IVF_NPROBE, index.nlist)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(x)
    return index


def write_index(index, path: Path) -> str:  # type: ignore[no-untyped-def]
    """Write `index` to `path` (the caller's temporary folder); its sha256."""
    _faiss().write_index(index, str(path))
    return file_sha256(path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def read_index(path: Path):  # type: ignore[no-untyped-def]
    return _faiss().read_index(str(path))


def set_search_params(index, kind: str, k: int) -> None:  # type: ignore[no-untyped-def]
    """Search breadth for a shortlist of `k`: HNSW's ef at least k, IVF's nprobe."""
    if kind == "hnsw":
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, k)
    elif kind == "ivfpq":
        index.nprobe = min(IVF_NPROBE, index.nlist)


@dataclass
class GalleryIndex:
    """An index over one gallery group's templates, with the templates for exact rescoring."""

    kind: str
    index: object  # faiss.Index
    templates: np.ndarray  # (I, dim) as stored in the version: the exact scores' source

    @classmethod
    def build(cls, templates: np.ndarray, kind: str) -> GalleryIndex:
        return cls(kind, build_index(templates, kind), templates)

    def shortlist(self, probes: np.ndarray, k: int) -> np.ndarray:
        """(P, <=k) template indices per probe, best first by exact score; -1 padding removed
        per row is left to the caller (rows shorter than k are padded with -1)."""
        probes = np.ascontiguousarray(l2_normalise(np.asarray(probes, np.float32)))
        k = min(k, len(self.templates))
        if len(probes) == 0 or k == 0:
            return np.zeros((len(probes), 0), np.int64)
        set_search_params(self.index, self.kind, k)
        _, found = self.index.search(probes, k)  # type: ignore[attr-defined]
        out = np.full_like(found, -1)
        for p, row in enumerate(found):  # exact rescoring: the index only picks the rows
            row = row[row >= 0]
            exact = self.templates[row].astype(np.float32) @ probes[p]
            order = np.argsort(-exact, kind="stable")
            out[p, : len(row)] = row[order]
        return out


def threads(n: int) -> None:
    """FAISS's OpenMP threads (benchmarks pin them to one core)."""
    _faiss().omp_set_num_threads(n)
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
