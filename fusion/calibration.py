"""Score -> log-likelihood ratio, one affine map per model (logistic calibration).

The defaults in `default_calibration.json` are fitted by
`benchmarks/fit_default_calibration.py` on real pairs in ../shared/data (LFW for
faces, LibriSpeech for voices) with balanced classes, so the fitted log-odds are
LLRs. Operators refit on their own labeled data (fusion issue).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

DEFAULTS_PATH = Path(__file__).with_name("default_calibration.json")


@dataclass
class LinearCalibration:
    """llr = slope * score + offset (natural log)."""

    slope: float = 1.0
    offset: float = 0.0
    fitted_on: str = "unfitted"

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> LinearCalibration:
        """Logistic regression with balanced class weights: the log-odds become LLRs."""
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(C=1e4, class_weight="balanced")
        model.fit(np.asarray(scores, float).reshape(-1, 1), np.asarray(labels, int))
        self.slope = float(model.coef_[0, 0])
        self.offset = float(model.intercept_[0])
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(scores, np.float64) + self.offset


def model_name(model_id: str) -> str:
    """'dlib-resnet-db0eeebc77c4' -> 'dlib-resnet' (the sha suffix is 12 hex digits)."""
    head, _, tail = model_id.rpartition("-")
    return head if len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else model_id


def load_default(model_id: str) -> LinearCalibration:
    table = json.loads(DEFAULTS_PATH.read_text()) if DEFAULTS_PATH.exists() else {}
    entry = table.get(model_name(model_id))
    if entry is None:
        return LinearCalibration(slope=10.0, offset=-5.0, fitted_on="none: a neutral guess")
    return LinearCalibration(entry["slope"], entry["offset"], entry["fitted_on"])


def save_defaults(table: dict[str, LinearCalibration]) -> None:
    DEFAULTS_PATH.write_text(
        json.dumps({k: asdict(v) for k, v in sorted(table.items())}, indent=2) + "\n"
    )
