"""The Extractor protocol and the Embeddings record shared by every modality."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Embeddings:
    """One batch of evidence: row i of `vectors` belongs to `keys[i]`.

    Missing evidence is absent (no row), never a zero vector.
    """

    vectors: np.ndarray  # (n, dim) float32, L2-normalised when the model's metric is cosine
    quality: np.ndarray  # (n,) float32, larger is better, 0..1 where the model allows
    keys: list[str]  # (n,) track / segment / sample ids
    model_id: str  # "<name>-<first 12 hex of the weights sha256>"
    extra: dict[str, Any] = field(default_factory=dict)  # per-row side facts (e.g. feature norms)

    def __post_init__(self) -> None:
        n = len(self.keys)
        if self.vectors.ndim != 2 or self.vectors.shape[0] != n or self.quality.shape != (n,):
            raise ValueError(
                f"Embeddings shapes disagree: vectors {self.vectors.shape}, "
                f"quality {self.quality.shape}, keys {n}"
            )

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def take(self, rows: Sequence[int]) -> Embeddings:
        """The given rows, in that order (per-row extras are dropped)."""
        index = np.asarray(rows, dtype=np.int64)
        return Embeddings(
            self.vectors[index], self.quality[index], [self.keys[i] for i in index], self.model_id
        )

    @classmethod
    def empty(cls, dim: int, model_id: str) -> Embeddings:
        return cls(np.zeros((0, dim), np.float32), np.zeros(0, np.float32), [], model_id)

    @classmethod
    def concat(cls, parts: Sequence[Embeddings]) -> Embeddings:
        if not parts:
            raise ValueError("nothing to concatenate")
        ids = {p.model_id for p in parts}
        if len(ids) != 1:
            raise ValueError(f"cannot mix models {sorted(ids)}")
        return cls(
            np.concatenate([p.vectors for p in parts]).astype(np.float32),
            np.concatenate([p.quality for p in parts]).astype(np.float32),
            [k for p in parts for k in p.keys],
            parts[0].model_id,
        )


@runtime_checkable
class Extractor(Protocol):
    """A model that turns a batch of items into embeddings.

    Plain class: no Ray, no Prefect, no catalog. `prepare` loads weights once;
    `embed` runs one batch and may be called many times.
    """

    name: str
    dim: int

    @property
    def model_id(self) -> str: ...

    def prepare(self, device: str = "cpu") -> None: ...

    def embed(self, items: Sequence[Any]) -> Embeddings: ...


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (cosine metric); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, eps)
