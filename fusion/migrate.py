"""Cross-model alignment: map one model's embeddings into another model's space.

Face models trained on similar data encode identity in spaces that a low-capacity map can
align. Fitted on paired embeddings (the same samples through both models), the map lets a
gallery built with the old model be searched with the new one until it is re-extracted.

`ridge`: affine least squares, W = argmin |[X 1] W - Y|^2 + alpha |W|^2 (bias not penalised).
`procrustes`: orthogonal rotation (plus centring) of unit vectors; needs equal dimensions and
keeps angles, so it cannot overfit a small pairing set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from biofuse.modalities.base import l2_normalise

MapMethod = Literal["ridge", "procrustes"]


@dataclass
class EmbeddingMap:
    """y ≈ normalise((x - source_mean) @ W + bias), fitted from paired rows."""

    method: MapMethod = "ridge"
    alpha: float = 1.0
    source_model: str = ""
    target_model: str = ""
    weight_: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)), repr=False)
    source_mean_: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    bias_: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    report_: dict[str, Any] = field(default_factory=dict)

    def fit(self, source: np.ndarray, target: np.ndarray) -> EmbeddingMap:
        x = l2_normalise(np.asarray(source, np.float64))
        y = l2_normalise(np.asarray(target, np.float64))
        if len(x) != len(y) or len(x) < 2:
            raise ValueError(f"need >= 2 paired rows, got {len(x)} and {len(y)}")
        self.source_mean_ = x.mean(axis=0)
        target_mean = y.mean(axis=0)
        xc, yc = x - self.source_mean_, y - target_mean
        if self.method == "ridge":
            gram = xc.T @ xc + self.alpha * np.eye(x.shape[1])
            self.weight_ = np.linalg.solve(gram, xc.T @ yc)
        elif self.method == "procrustes":
            if x.shape[1] != y.shape[1]:
                raise ValueError(
                    f"procrustes needs equal dimensions ({x.shape[1]} vs {y.shape[1]}); use ridge"
                )
            u, _, vt = np.linalg.svd(xc.T @ yc)
            self.weight_ = u @ vt
        else:
            raise ValueError(f"unknown map {self.method!r}: use 'ridge' or 'procrustes'")
        self.bias_ = target_mean
        mapped = self.transform(source)
        self.report_ = {
            "pairs": len(x),
            "source_dim": int(x.shape[1]),
            "target_dim": int(y.shape[1]),
            "mean_cosine_before": float(np.mean(np.sum(x * y, axis=1)))
            if x.shape[1] == y.shape[1]
            else None,
            "mean_cosine_after": float(np.mean(np.sum(mapped * y, axis=1))),
        }
        return self

    def transform(self, source: np.ndarray) -> np.ndarray:
        x = l2_normalise(np.asarray(source, np.float64))
        return l2_normalise((x - self.source_mean_) @ self.weight_ + self.bias_).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        """JSON metadata + an .npz of the arrays beside it (no pickles)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path.with_suffix(".npz"), weight=self.weight_, mean=self.source_mean_, bias=self.bias_
        )
        meta = {
            "method": self.method,
            "alpha": self.alpha,
            "source_model": self.source_model,
            "target_model": self.target_model,
            "arrays": path.with_suffix(".npz").name,
            "report": self.report_,
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
        return path.with_suffix(".json")

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingMap:
        path = Path(path).with_suffix(".json")
        meta = json.loads(path.read_text())
        with np.load(path.with_name(meta["arrays"]), allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("weight", "mean", "bias")}
        return cls(
            meta["method"],
            meta["alpha"],
            meta["source_model"],
            meta["target_model"],
            arrays["weight"],
            arrays["mean"],
            arrays["bias"],
            meta["report"],
        )
