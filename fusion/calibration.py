"""Score -> log-likelihood ratio, one affine map per model (logistic calibration).

The defaults in `default_calibration.json` are fitted by
`benchmarks/fit_default_calibration.py` on real pairs in ../shared/data (LFW for
faces, LibriSpeech for voices, CASIA-B subjects the gait models never trained on, pedestrian
tracks for body shape) with balanced classes, so the fitted log-odds are LLRs. Operators
refit on their own labeled data (`biofuse calibrate`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from biofuse.errors import ModelMissingError
from biofuse.registry import model_name  # noqa: F401  (re-exported: callers import it here)

DEFAULTS_PATH = Path(__file__).with_name("default_calibration.json")


@dataclass
class LinearCalibration:
    """llr = clip(slope * score + offset, -max_abs_llr, +max_abs_llr) (natural log).

    Nearly separable training pairs give very steep slopes; the bound keeps one
    modality from claiming more evidence than its calibration data could show:
    with n trials in the smaller class, odds beyond about n:1 were never observed.
    """

    slope: float = 1.0
    offset: float = 0.0
    fitted_on: str = "unfitted"
    max_abs_llr: float = float("inf")

    def fit(self, scores: np.ndarray, labels: np.ndarray) -> LinearCalibration:
        """Logistic regression with balanced class weights: the log-odds become LLRs."""
        from sklearn.linear_model import LogisticRegression

        labels = np.asarray(labels, int)
        model = LogisticRegression(C=1e4, class_weight="balanced")
        model.fit(np.asarray(scores, float).reshape(-1, 1), labels)
        self.slope = float(model.coef_[0, 0])
        self.offset = float(model.intercept_[0])
        self.max_abs_llr = float(np.log1p(min(labels.sum(), len(labels) - labels.sum())))
        return self

    def transform(self, scores: np.ndarray) -> np.ndarray:
        llr = self.slope * np.asarray(scores, np.float64) + self.offset
        return np.clip(llr, -self.max_abs_llr, self.max_abs_llr)


# The bounded guess a model gets when its declaration says calibration=UNFITTED (cosine 0.5 ->
# LLR 0, never more than +-2): declared, never a silent default.
UNFITTED_GUESS = (4.0, -2.0, "none: an unfitted guess", 2.0)


def load_default(model_id: str) -> LinearCalibration:
    """The calibration a model's registry declaration names (`ModelSpec.calibration`).

    An undeclared model, or a declared key absent from default_calibration.json, is an error.
    """
    from biofuse.registry import UNFITTED, spec_for

    spec = spec_for(model_id)
    declared = spec.calibration
    if isinstance(declared, dict):
        entry = declared
    elif declared == UNFITTED:
        slope, offset, fitted_on, bound = UNFITTED_GUESS
        return LinearCalibration(slope, offset, fitted_on, max_abs_llr=bound)
    else:
        table = json.loads(DEFAULTS_PATH.read_text()) if DEFAULTS_PATH.exists() else {}
        if declared not in table:
            raise ModelMissingError(
                f"model {spec.name!r} declares calibration {declared!r}, which is not in "
                f"{DEFAULTS_PATH.name}; fit it (benchmarks/fit_default_calibration.py) or "
                f"declare {UNFITTED!r} or an inline map"
            )
        entry = table[declared]
    return LinearCalibration(
        float(entry["slope"]),
        float(entry["offset"]),
        str(entry["fitted_on"]),
        float(entry["max_abs_llr"]) if entry.get("max_abs_llr") is not None else np.inf,
    )


def save_defaults(table: dict[str, LinearCalibration]) -> None:
    DEFAULTS_PATH.write_text(
        json.dumps({k: asdict(v) for k, v in sorted(table.items())}, indent=2) + "\n"
    )


def calibration_record(cal: LinearCalibration) -> dict[str, Any]:
    """The map as JSON-safe values (an unbounded clip is None), for run records."""
    out: dict[str, Any] = asdict(cal)
    out["max_abs_llr"] = None if not np.isfinite(cal.max_abs_llr) else float(cal.max_abs_llr)
    return out
