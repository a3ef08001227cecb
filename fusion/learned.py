"""Learned score fusion: logistic regression, gradient boosting or a small MLP.

Each trial (probe, identity) becomes, per modality m in a fixed order, three features:
  llr_m      the modality's score through its own logistic calibration fitted on the same
             training trials (so every modality is on one LLR scale);
  quality_m  the probe-side quality in [0, 1];
  missing_m  1 when the probe has no evidence for m, else 0.
A missing modality is filled with llr_m = 0 (a likelihood ratio of 1: no evidence either
way) and quality_m = 0, and flagged by missing_m = 1, so the model can learn how much the
absence itself says; it is never scored as a zero similarity.

The output is an LLR: the classifier's log-odds minus the training set's prior log-odds,
softly bounded by b = log(1 + n) for n trials in the smaller class (odds beyond that were
never seen) as b tanh(llr / b), which keeps the order of strong trials.

Saved as a folder: `fusion.json` (kind, modalities, model ids, calibrations, weights for
logistic/MLP, training report). Gradient boosting has no safe format in scikit-learn, so it
is pickled beside it with its sha256 in `fusion.json`, and `load` unpickles only a file whose
hash matches (a file we wrote, not one swapped in).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from biofuse.fusion.calibration import LinearCalibration
from biofuse.fusion.scores import ModalityScores

from biofuse.errors import GalleryError, ModelMissingError

Kind = Literal["logistic", "gboost", "mlp"]
KINDS: tuple[str, ...] = ("logistic", "gboost", "mlp")
MISSING_LLR = 0.0  # the neutral fill: a likelihood ratio of 1
MISSING_QUALITY = 0.0
GBOOST_FILE = "gboost.pkl"


def _prior_log_odds(labels: np.ndarray) -> float:
    n_gen = int(labels.sum())
    return float(np.log(n_gen / (len(labels) - n_gen)))


@dataclass
class LearnedFusion:
    """Fit on trials (n, M) of scores and qualities (NaN = absent) with 0/1 labels."""

    kind: Kind = "logistic"
    modalities: list[str] = field(default_factory=list)
    model_ids: list[str] = field(default_factory=list)
    seed: int = 0
    calibrations_: list[LinearCalibration] = field(default_factory=list, repr=False)
    scaler_: tuple[list[float], list[float]] | None = field(default=None, repr=False)
    prior_log_odds_: float = 0.0
    max_abs_llr_: float = float("inf")
    weights_: dict[str, Any] = field(default_factory=dict, repr=False)
    report_: dict[str, Any] = field(default_factory=dict, repr=False)
    _gboost: Any = field(default=None, repr=False)

    # -- features -------------------------------------------------------------------
    def features(self, scores: np.ndarray, quality: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, np.float64).reshape(-1, len(self.modalities))
        q = np.asarray(quality, np.float64).reshape(s.shape)
        missing = np.isnan(s)
        cols = []
        for m, cal in enumerate(self.calibrations_):
            # the affine map without its bound: clipping would tie the strongest trials
            affine = cal.slope * np.nan_to_num(s[:, m]) + cal.offset
            llr = np.where(missing[:, m], MISSING_LLR, affine)
            qual = np.where(missing[:, m], MISSING_QUALITY, np.clip(np.nan_to_num(q[:, m]), 0, 1))
            cols += [llr, qual, missing[:, m].astype(np.float64)]
        return np.stack(cols, axis=1)

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        assert self.scaler_ is not None
        mean, scale = (np.asarray(v) for v in self.scaler_)
        return (x - mean) / scale

    # -- fit / apply ----------------------------------------------------------------
    def fit(self, scores: np.ndarray, quality: np.ndarray, labels: np.ndarray) -> LearnedFusion:
        s = np.asarray(scores, np.float64)
        y = np.asarray(labels, int).reshape(-1)
        if s.ndim != 2 or s.shape[1] != len(self.modalities) or len(y) != len(s):
            raise ValueError(f"scores must be (trials, {len(self.modalities)}) with one label each")
        if y.min() == y.max():
            raise ValueError("training trials must include both genuine and impostor labels")
        self.calibrations_ = []
        for m, name in enumerate(self.modalities):
            have = ~np.isnan(s[:, m])
            if len(set(y[have].tolist())) < 2:
                raise ValueError(f"{name}: no genuine and impostor trials to calibrate on")
            self.calibrations_.append(LinearCalibration().fit(s[have, m], y[have]))
        x = self.features(s, quality)
        scale = x.std(axis=0)
        self.scaler_ = (x.mean(axis=0).tolist(), np.where(scale > 0, scale, 1.0).tolist())
        xs = self._scaled(x)
        self.prior_log_odds_ = _prior_log_odds(y)
        self.max_abs_llr_ = float(np.log1p(min(y.sum(), len(y) - y.sum())))
        if self.kind == "logistic":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1.0, max_iter=1000).fit(xs, y)
            self.weights_ = {"coef": lr.coef_[0].tolist(), "intercept": float(lr.intercept_[0])}
        elif self.kind == "mlp":
            from sklearn.neural_network import MLPClassifier

            mlp = MLPClassifier(
                hidden_layer_sizes=(16,), alpha=1e-3, max_iter=2000, random_state=self.seed
            ).fit(xs, y)
            self.weights_ = {
                "coefs": [w.tolist() for w in mlp.coefs_],
                "intercepts": [b.tolist() for b in mlp.intercepts_],
            }
        elif self.kind == "gboost":
            from sklearn.ensemble import GradientBoostingClassifier

            self._gboost = GradientBoostingClassifier(
                n_estimators=150, max_depth=2, learning_rate=0.1, random_state=self.seed
            ).fit(xs, y)
        else:
            raise ValueError(f"unknown learned fusion {self.kind!r}: use one of {KINDS}")
        llr = self.llr(s, quality)
        from biofuse.fusion.metrics import cllr, eer

        self.report_ = {
            "trained_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "trials": len(y),
            "genuine": int(y.sum()),
            "impostor": int(len(y) - y.sum()),
            "missing_rate": {
                n: float(np.isnan(s[:, m]).mean()) for m, n in enumerate(self.modalities)
            },
            "training_eer": eer(llr[y == 1], llr[y == 0]),
            "training_cllr_bits": cllr(llr[y == 1], llr[y == 0]),
            "missing_fill": {"llr": MISSING_LLR, "quality": MISSING_QUALITY, "indicator": 1},
        }
        return self

    def llr(self, scores: np.ndarray, quality: np.ndarray) -> np.ndarray:
        """Fused LLR of each trial (row of `scores`); NaN where every modality is absent."""
        s = np.asarray(scores, np.float64).reshape(-1, len(self.modalities))
        xs = self._scaled(self.features(s, quality))
        if self.kind == "logistic":
            logit = xs @ np.asarray(self.weights_["coef"]) + self.weights_["intercept"]
        elif self.kind == "mlp":
            h = xs
            layers = list(zip(self.weights_["coefs"], self.weights_["intercepts"], strict=True))
            for w, b in layers[:-1]:
                h = np.maximum(h @ np.asarray(w) + np.asarray(b), 0.0)  # relu, sklearn's default
            logit = (h @ np.asarray(layers[-1][0]) + np.asarray(layers[-1][1]))[:, 0]
        else:
            p = np.clip(self._gboost.predict_proba(xs)[:, 1], 1e-12, 1 - 1e-12)
            logit = np.log(p / (1 - p))
        # a smooth bound (b tanh(x / b)): as limited as a clip, but it keeps the order of
        # strong trials, which a clip would tie at the bound and make unrankable
        b = self.max_abs_llr_
        out = b * np.tanh((logit - self.prior_log_odds_) / b)
        out[np.all(np.isnan(s), axis=1)] = np.nan
        return out

    def check_model_ids(self, tables: list[ModalityScores]) -> None:
        """Refuse tables from other models: the fusion learned their score distributions."""
        got = {t.modality: t.model_id for t in tables}
        want = dict(zip(self.modalities, self.model_ids, strict=True))
        if got != want:
            raise GalleryError(
                f"the learned fusion was trained for {want} but the scores come from {got}; "
                "retrain it on labelled scores of these models (`biofuse calibrate`)"
            )

    def fuse_tables(self, tables: list[ModalityScores]) -> np.ndarray:
        """(P, I) fused LLRs of score tables that share probes and identities."""
        self.check_model_ids(tables)
        order = [next(t for t in tables if t.modality == m) for m in self.modalities]
        shape = order[0].scores.shape
        s = np.stack([t.scores.reshape(-1) for t in order], axis=1)
        q = np.stack([np.repeat(t.quality, shape[1]) for t in order], axis=1)
        return self.llr(s, q).reshape(shape)

    # -- persistence ----------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {
            "kind": self.kind,
            "modalities": self.modalities,
            "model_ids": self.model_ids,
            "seed": self.seed,
            "calibrations": [asdict(c) for c in self.calibrations_],
            "scaler": self.scaler_,
            "prior_log_odds": self.prior_log_odds_,
            "max_abs_llr": self.max_abs_llr_,
            "weights": self.weights_,
            "report": self.report_,
        }
        if self.kind == "gboost":
            blob = pickle.dumps(self._gboost)
            (folder / GBOOST_FILE).write_bytes(blob)
            meta["weights"] = {"file": GBOOST_FILE, "sha256": hashlib.sha256(blob).hexdigest()}
        (folder / "fusion.json").write_text(json.dumps(meta, indent=2) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LearnedFusion:
        folder = Path(folder)
        path = folder / "fusion.json"
        if not path.is_file():
            raise ModelMissingError(f"no learned fusion at {path}: train one (`biofuse calibrate`)")
        meta = json.loads(path.read_text())
        fusion = cls(meta["kind"], meta["modalities"], meta["model_ids"], meta["seed"])
        fusion.calibrations_ = [LinearCalibration(**c) for c in meta["calibrations"]]
        fusion.scaler_ = tuple(meta["scaler"])  # type: ignore[assignment]
        fusion.prior_log_odds_ = meta["prior_log_odds"]
        fusion.max_abs_llr_ = meta["max_abs_llr"]
        fusion.weights_ = meta["weights"]
        fusion.report_ = meta["report"]
        if fusion.kind == "gboost":
            blob = (folder / meta["weights"]["file"]).read_bytes()
            if hashlib.sha256(blob).hexdigest() != meta["weights"]["sha256"]:
                raise ModelMissingError(
                    f"{folder / meta['weights']['file']} does not match the sha256 recorded in "
                    f"{path}; refusing to unpickle it. Retrain (`biofuse calibrate`)"
                )
            fusion._gboost = pickle.loads(blob)  # noqa: S301 - our own file, hash checked
        return fusion
