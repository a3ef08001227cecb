"""The offline gait default: Gait Energy Image + PCA + LDA, trained by us on CASIA-B 001-074.

A GEI is the mean of a sequence's pretreated silhouettes (centre 64x44, 0..1): it keeps body
shape and the spread of the swinging limbs, and averaging over a gait cycle makes it robust to
segmentation noise. PCA removes the pixel noise directions (and makes the within-class scatter
invertible); LDA then keeps the directions that separate walkers and suppresses what varies
within one walker (view, bag, coat). Rows are compared by cosine in the LDA space.

Weights (`gei-pca-lda-casiab.npz`, float32, no pickles): `pca_mean` (2816,), `pca_basis`
(2816, p), `lda_projection` (p, l); an embedding is
`l2_normalise((gei - pca_mean) @ pca_basis @ lda_projection)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
from biofuse.modalities.base import Embeddings, l2_normalise
from biofuse.modalities.gait.gaitbase import base_sil_cutting
from biofuse.modalities.items import SilhouetteSequence

from biofuse.errors import ModelMissingError
from biofuse.registry import ResolvedModel

GEI_SHAPE = (64, 44)
GEI_DIM = GEI_SHAPE[0] * GEI_SHAPE[1]
FULL_QUALITY_FRAMES = 30  # about one gait cycle at 25 fps; fewer frames give a blurred cycle
WEIGHT_KEYS = ("pca_mean", "pca_basis", "lda_projection")


def usable_frames(sequence: SilhouetteSequence) -> np.ndarray:
    """(T, 64, 64) frames with any foreground; empty frames carry no gait and are dropped."""
    frames = np.asarray(sequence.frames)
    if frames.ndim != 3 or frames.shape[1:] != (64, 64):
        raise ValueError(
            f"silhouette sequence {sequence.key!r} has frames of shape {frames.shape}; "
            "expected (T, 64, 64) from the OpenGait pretreatment "
            "(biofuse.modalities.gait.silhouette)"
        )
    return frames[frames.reshape(len(frames), -1).any(axis=1)]


def gait_energy_image(frames: np.ndarray) -> np.ndarray:
    """(T, 64, 64) uint8 0/255 silhouettes -> flattened 64x44 GEI in 0..1 (float32)."""
    if len(frames) == 0:
        raise ValueError("a gait energy image needs at least one non-empty frame")
    return base_sil_cutting(frames).mean(axis=0).reshape(-1)


def sequence_quality(sequence: SilhouetteSequence, frames_used: int) -> float:
    """0..1: segmentation quality times a length term saturating at one gait cycle."""
    length = min(1.0, frames_used / FULL_QUALITY_FRAMES)
    return float(np.clip(sequence.quality, 0.0, 1.0) * length)


def principal_axes(geis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and principal axes (D, r) by decreasing variance: SVD of the centred data."""
    x = np.asarray(geis, dtype=np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt.T


@dataclass(frozen=True)
class GeiPcaLda:
    """The learned projection; `fit` learns it, `project` applies it (unit rows)."""

    pca_mean: np.ndarray  # (D,)
    pca_basis: np.ndarray  # (D, p) orthonormal columns
    lda_projection: np.ndarray  # (p, l)

    @property
    def dim(self) -> int:
        return int(self.lda_projection.shape[1])

    @classmethod
    def fit(
        cls,
        geis: np.ndarray,
        labels: Sequence[str],
        pca_dim: int,
        lda_dim: int,
        pca: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> GeiPcaLda:
        """PCA to `pca_dim`, then LDA to `lda_dim` (at most classes - 1). Deterministic.

        `pca` is `principal_axes(geis)` when several sizes are tried on the same data (the SVD
        is the slow part). LDA solves S_b v = w S_w v in the PCA space, where S_w is invertible
        because p is below the sample count. Eigenvector signs are irrelevant under cosine.
        """
        x = np.asarray(geis, dtype=np.float64)
        y = np.asarray(labels)
        classes, index = np.unique(y, return_inverse=True)
        if len(classes) < 2 or x.ndim != 2 or len(x) != len(y):
            raise ValueError("fitting needs (n, D) GEIs with labels from at least 2 subjects")
        pca_dim = min(pca_dim, len(x) - len(classes), x.shape[1])
        lda_dim = min(lda_dim, len(classes) - 1, pca_dim)
        if pca_dim < 1 or lda_dim < 1:
            raise ValueError(f"too few samples ({len(x)}) for {len(classes)} subjects")
        mean, axes = principal_axes(x) if pca is None else pca
        basis = axes[:, :pca_dim]
        z = (x - mean) @ basis  # centred: the global mean is 0 here
        class_means = np.stack([z[index == c].mean(axis=0) for c in range(len(classes))])
        counts = np.bincount(index).astype(np.float64)
        within = z - class_means[index]
        s_w = within.T @ within
        s_b = (class_means * counts[:, None]).T @ class_means
        s_w += 1e-6 * np.trace(s_w) / pca_dim * np.eye(pca_dim)  # guards a rank-deficient S_w
        values, vectors = scipy.linalg.eigh(s_b, s_w)
        order = np.argsort(values)[::-1][:lda_dim]
        return cls(
            mean.astype(np.float32),
            basis.astype(np.float32),
            vectors[:, order].astype(np.float32),
        )

    def project(self, geis: np.ndarray) -> np.ndarray:
        """(n, D) GEIs -> (n, l) unit rows in the LDA space."""
        z = (np.asarray(geis, np.float32) - self.pca_mean) @ self.pca_basis
        return l2_normalise(z @ self.lda_projection)

    def save(self, path: Path) -> None:
        """float32 arrays in a plain .npz (no pickles), readable with `allow_pickle=False`."""
        np.savez_compressed(
            path,
            pca_mean=self.pca_mean.astype(np.float32),
            pca_basis=self.pca_basis.astype(np.float32),
            lda_projection=self.lda_projection.astype(np.float32),
        )

    @classmethod
    def load(cls, path: Path) -> GeiPcaLda:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: np.asarray(z[k], np.float32) for k in WEIGHT_KEYS}
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise ModelMissingError(
                f"{path} is not a GEI-PCA-LDA weight file ({exc}); retrain it with "
                "`python benchmarks/gait_train_gei.py` or reinstall biofuse"
            ) from exc
        mean, basis, lda = (arrays[k] for k in WEIGHT_KEYS)
        if mean.shape != (GEI_DIM,) or basis.shape != (GEI_DIM, lda.shape[0]) or lda.ndim != 2:
            raise ModelMissingError(
                f"{path} has inconsistent shapes (pca_mean {mean.shape}, pca_basis "
                f"{basis.shape}, lda_projection {lda.shape}); retrain it with "
                "`python benchmarks/gait_train_gei.py`"
            )
        return cls(mean, basis, lda)


class GeiGaitExtractor:
    """One unit row per silhouette sequence (cosine metric); sequences without foreground
    give no row (missing evidence is absent, never a zero vector)."""

    name = "gei-pca-lda-casiab"

    def __init__(self, model: ResolvedModel) -> None:
        self.model = model
        self._projection: GeiPcaLda | None = None
        self.dim = GeiPcaLda.load(model.paths["weights"]).dim

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def prepare(self, device: str = "cpu") -> None:
        """Load the projection once (numpy only: the device is irrelevant)."""
        if self._projection is None:
            self._projection = GeiPcaLda.load(self.model.paths["weights"])

    def embed(self, items: Sequence[SilhouetteSequence]) -> Embeddings:
        self.prepare()
        assert self._projection is not None
        geis, quality, keys = [], [], []
        for item in items:
            frames = usable_frames(item)
            if len(frames) == 0:
                continue
            geis.append(gait_energy_image(frames))
            quality.append(sequence_quality(item, len(frames)))
            keys.append(item.key)
        if not keys:
            return Embeddings.empty(self.dim, self.model_id)
        vectors = self._projection.project(np.stack(geis))
        return Embeddings(vectors, np.asarray(quality, np.float32), keys, self.model_id)
