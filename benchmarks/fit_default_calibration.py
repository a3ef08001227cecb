"""Fit the default score -> LLR calibrations from the benchmarks' per-pair scores.

Reads the per-pair score files written by `benchmarks/lfw_dlib.py` (faces) and
`benchmarks/voice_librispeech.py` (voices), fits `fusion.calibration.LinearCalibration` on
all pairs of each, writes them to `fusion/default_calibration.json`, and reports how well
calibrated the fitted LLRs are on pairs they were not fitted on (3-fold Cllr; LFW's own
folds, voice folds by speaker). Fusion sums LLRs across modalities, so a miscalibrated
modality would dominate or vanish; Cllr measures exactly that.

    .venv/bin/python benchmarks/lfw_dlib.py
    .venv/bin/python benchmarks/voice_librispeech.py
    .venv/bin/python benchmarks/fit_default_calibration.py

Writes fusion/default_calibration.json and benchmarks/results/calibration.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fusion.calibration import LinearCalibration, load_default, save_defaults  # noqa: E402
from fusion.metrics import cllr, eer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
FOLDS = (1, 2, 3)


@dataclass
class PairScores:
    """One model's verification trials, with a fold plan for cross-validation."""

    model: str
    data: str
    score_name: str
    scores: np.ndarray
    labels: np.ndarray  # 1 same identity, 0 different
    train: dict[int, np.ndarray]  # fold -> mask of the pairs a fold's calibration is fitted on
    test: dict[int, np.ndarray]  # fold -> mask of the pairs it is evaluated on
    folds_how: str
    subsets: dict[str, np.ndarray] = field(default_factory=dict)  # name -> mask, for CV Cllr


def read_tsv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise SystemExit(f"{path} not found: run the benchmark that writes it first")
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def lfw_pairs(path: Path) -> PairScores:
    """LFW's three folds as published: fit on two, evaluate on the third."""
    rows = read_tsv(path)
    scores = np.array([float(r["cosine"]) for r in rows])
    labels = np.array([int(r["same"]) for r in rows])
    fold = np.array([int(r["fold"]) for r in rows])
    return PairScores(
        model="dlib-resnet",
        data=f"lfw-dev pairs.tsv ({path.name}, benchmarks/lfw_dlib.py)",
        score_name="cosine of dlib-resnet unit vectors",
        scores=scores,
        labels=labels,
        train={k: fold != k for k in FOLDS},
        test={k: fold == k for k in FOLDS},
        folds_how="LFW pairs.tsv folds 1-3 (fit on two folds, evaluate on the third)",
    )


def speaker_folds(speakers: list[str]) -> dict[str, int]:
    """Speakers dealt round-robin into 3 folds, corpus by corpus, so each fold mixes corpora."""
    ordered = sorted(set(speakers), key=lambda s: (s.split("-", 1)[0], s))
    return {s: FOLDS[i % len(FOLDS)] for i, s in enumerate(ordered)}


def voice_pairs(path: Path) -> PairScores:
    """LibriSpeech/VCTK/VCC trials; VAD turns if scored, since the system embeds VAD turns.

    Folds are by speaker: a fold's test pairs have both speakers in it, its training pairs
    neither, so no voice is seen on both sides. Pairs across two folds are only used for
    fitting (the fold that holds neither speaker out).
    """
    rows = read_tsv(path)
    column = (
        "cosine_vad_turns" if rows and rows[0].get("cosine_vad_turns") is not None else "cosine"
    )
    rows = [r for r in rows if r[column] != ""]  # utterances with no turn >= 1 s: no embedding
    scores = np.array([float(r[column]) for r in rows])
    labels = np.array([int(r["same"]) for r in rows])
    fold_of = speaker_folds([r["speaker1"] for r in rows] + [r["speaker2"] for r in rows])
    f1 = np.array([fold_of[r["speaker1"]] for r in rows])
    f2 = np.array([fold_of[r["speaker2"]] for r in rows])

    def corpus(side: int) -> np.ndarray:
        return np.array([r[f"speaker{side}"].split("-", 1)[0] for r in rows])

    variant = (
        "VAD turns (webrtc), quality-weighted template per utterance"
        if column == "cosine_vad_turns"
        else "whole utterance"
    )
    utterances = len({r["utt1"] for r in rows} | {r["utt2"] for r in rows})
    return PairScores(
        model="resemblyzer-ge2e",
        data=(
            f"voice-dev/librispeech, {utterances} utterances of {len(fold_of)} speakers "
            f"(LibriSpeech test-other, VCTK, VCC2016), every cross-utterance pair "
            f"({path.name}, benchmarks/voice_librispeech.py)"
        ),
        score_name=f"cosine of resemblyzer-ge2e embeddings, {variant}",
        scores=scores,
        labels=labels,
        train={k: (f1 != k) & (f2 != k) for k in FOLDS},
        test={k: (f1 == k) & (f2 == k) for k in FOLDS},
        folds_how=(
            "3 folds of 6 speakers (dealt round-robin by corpus); fit on pairs with neither "
            "speaker in the held-out fold, evaluate on pairs with both speakers in it"
        ),
        # cross-corpus impostors differ in channel as well as voice: the easy part of the set
        subsets={"within_corpus": corpus(1) == corpus(2)},
    )


def pav_llrs(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The best monotonic score -> LLR map for these very pairs (PAV), for min-Cllr.

    Isotonic regression gives P(same | score) at the data's own prior; subtracting the prior
    log-odds turns it into an LLR. It is fitted on the pairs it scores, so it is a floor that
    no calibration of this score can beat there, not an achievable figure.
    """
    from sklearn.isotonic import IsotonicRegression

    posterior = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit_transform(
        scores, labels.astype(float)
    )
    prior_logodds = np.log(labels.sum() / (labels.size - labels.sum()))
    with np.errstate(divide="ignore"):
        return np.log(posterior) - np.log1p(-posterior) - prior_logodds


def cllr_of(llrs: np.ndarray, labels: np.ndarray) -> float:
    return cllr(llrs[labels == 1], llrs[labels == 0])


def evaluate(pairs: PairScores, date: str) -> tuple[LinearCalibration, dict]:
    """Fit on everything (the default), and cross-validate the same recipe fold by fold."""
    s, y = pairs.scores, pairs.labels
    n_tar, n_non = int(y.sum()), int((y == 0).sum())
    final = LinearCalibration().fit(s, y)
    final.fitted_on = (
        f"{pairs.data}: {y.size} pairs ({n_tar} same, {n_non} different), "
        f"{pairs.score_name}; logistic regression with balanced classes; "
        f"fitted {date} by benchmarks/fit_default_calibration.py"
    )
    per_fold, held_llrs, held_labels = {}, [], []
    for k in FOLDS:
        train, test = pairs.train[k], pairs.test[k]
        cal = LinearCalibration().fit(s[train], y[train])
        llr = cal.transform(s[test])
        per_fold[k] = {
            "slope": cal.slope,
            "offset": cal.offset,
            "train_pairs": [int(y[train].sum()), int((y[train] == 0).sum())],
            "test_pairs": [int(y[test].sum()), int((y[test] == 0).sum())],
            "cllr": cllr_of(llr, y[test]),
            "min_cllr": cllr_of(pav_llrs(s[test], y[test]), y[test]),
        }
        held_llrs.append(llr)
        held_labels.append(y[test])
    cv_llr, cv_y = np.concatenate(held_llrs), np.concatenate(held_labels)
    cv_scores = np.concatenate([s[pairs.test[k]] for k in FOLDS])
    subsets = {}
    for name, mask in pairs.subsets.items():
        m = np.concatenate([mask[pairs.test[k]] for k in FOLDS])
        subsets[name] = {
            "pooled_test_pairs": [int(cv_y[m].sum()), int((cv_y[m] == 0).sum())],
            "cllr": cllr_of(cv_llr[m], cv_y[m]),
            "min_cllr": cllr_of(pav_llrs(cv_scores[m], cv_y[m]), cv_y[m]),
        }
    neutral = load_default("unfitted-model")  # the fallback used when no default is fitted
    report = {
        "model": pairs.model,
        "data": pairs.data,
        "score": pairs.score_name,
        "pairs": {"same": n_tar, "different": n_non},
        "fitted": asdict(final),
        "score_at_llr_0": -final.offset / final.slope,
        "eer_all_pairs": eer(s[y == 1], s[y == 0]),
        "cross_validation": {
            "folds": pairs.folds_how,
            "per_fold": per_fold,
            "pooled_test_pairs": [int(cv_y.sum()), int((cv_y == 0).sum())],
            "cllr": cllr_of(cv_llr, cv_y),
            "cllr_mean_of_folds": float(np.mean([f["cllr"] for f in per_fold.values()])),
            "min_cllr": cllr_of(pav_llrs(cv_scores, cv_y), cv_y),
            "subsets": subsets,
            "slope_spread": [
                min(f["slope"] for f in per_fold.values()),
                max(f["slope"] for f in per_fold.values()),
            ],
        },
        "all_pairs_in_sample": {
            "cllr_fitted": cllr_of(final.transform(s), y),
            "min_cllr": cllr_of(pav_llrs(s, y), y),
            "cllr_neutral_guess": cllr_of(neutral.transform(s), y),
            "neutral_guess": {"slope": neutral.slope, "offset": neutral.offset},
        },
    }
    return final, report


def markdown(report: dict) -> str:
    lines = [
        "# Default score calibration (score -> LLR) and its quality",
        "",
        f"Written by `benchmarks/fit_default_calibration.py` on {report['date']}; the fitted "
        "maps are in `fusion/default_calibration.json`. Cllr in bits (0 perfect; 1 = an LLR of "
        "0 always). *CV Cllr*: LLRs from a calibration fitted on the other folds, pooled over "
        "the three held-out folds. *min Cllr*: the same pairs after the best monotonic map "
        "fitted on them (PAV), a floor: CV Cllr - min Cllr is the cost of miscalibration.",
        "",
        "| model | pairs (same / diff) | slope | offset | score at LLR 0 | CV Cllr | "
        "CV min Cllr | Cllr per fold | in-sample Cllr | neutral guess Cllr | EER |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["models"].values():
        cv, ins = r["cross_validation"], r["all_pairs_in_sample"]
        folds = " / ".join(f"{f['cllr']:.3f}" for f in cv["per_fold"].values())
        lines.append(
            f"| {r['model']} | {r['pairs']['same']} / {r['pairs']['different']} | "
            f"{r['fitted']['slope']:.2f} | {r['fitted']['offset']:.2f} | "
            f"{r['score_at_llr_0']:.4f} | **{cv['cllr']:.3f}** | {cv['min_cllr']:.3f} | "
            f"{folds} | {ins['cllr_fitted']:.3f} | {ins['cllr_neutral_guess']:.3f} | "
            f"{100 * r['eer_all_pairs']:.2f} % |"
        )
    lines.append("")
    for r in report["models"].values():
        cv = r["cross_validation"]
        slopes = ", ".join(f"{f['slope']:.1f}" for f in cv["per_fold"].values())
        guess = r["all_pairs_in_sample"]["neutral_guess"]
        sign = "+" if guess["offset"] >= 0 else "-"
        lines += [
            f"## {r['model']}",
            "",
            f"- Score: {r['score']}. Data: {r['data']}.",
            f"- Folds: {cv['folds']}. Held-out pairs pooled: {cv['pooled_test_pairs'][0]} same / "
            f"{cv['pooled_test_pairs'][1]} different. Per-fold slopes: {slopes}.",
            f"- Neutral guess (`llr = {guess['slope']:g} * score {sign} {abs(guess['offset']):g}`,"
            " used when no default is fitted) for comparison.",
        ]
        for name, sub in cv["subsets"].items():
            lines.append(
                f"- CV on the {name.replace('_', ' ')} pairs only ({sub['pooled_test_pairs'][0]} "
                f"same / {sub['pooled_test_pairs'][1]} different): Cllr **{sub['cllr']:.3f}**, "
                f"min Cllr {sub['min_cllr']:.3f}."
            )
        lines.append("")
    lines += [
        "The LLRs come from logistic regression with balanced class weights, so they are "
        "prior-free log-likelihood ratios (natural log), not log posterior odds at the data's "
        "own mix of same/different pairs.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--face", type=Path, default=RESULTS / "lfw_dlib_scores.tsv")
    parser.add_argument("--voice", type=Path, default=RESULTS / "voice_librispeech_scores.tsv")
    parser.add_argument(
        "--no-save", action="store_true", help="report only; leave default_calibration.json"
    )
    args = parser.parse_args()

    date = dt.date.today().isoformat()
    fitted, models = {}, {}
    for pairs in (lfw_pairs(args.face), voice_pairs(args.voice)):
        fitted[pairs.model], models[pairs.model] = evaluate(pairs, date)
    report = {
        "benchmark": "fit_default_calibration",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cllr_definition": "0.5 * (mean log2(1 + exp(-llr_target)) + "
        "mean log2(1 + exp(llr_nontarget))), natural-log LLRs",
        "models": models,
    }
    if not args.no_save:
        save_defaults(fitted)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "calibration.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "calibration.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
