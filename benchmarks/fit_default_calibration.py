"""Fit the default score -> LLR calibrations from the benchmarks' per-pair scores.

Reads the per-pair score files written by `benchmarks/lfw_dlib.py` (faces) and
`benchmarks/voice_librispeech.py` (voices), fits `biofuse.fusion.calibration.LinearCalibration` on
all pairs of each, writes them to `fusion/default_calibration.json`, and reports how well
calibrated the fitted LLRs are on pairs they were not fitted on (3-fold Cllr; LFW's own
folds, voice folds by speaker). Fusion sums LLRs across modalities, so a miscalibrated
modality would dominate or vanish; Cllr measures exactly that.

Voice is fitted on the VAD turns of the default speech detector (`--voice-vad` to choose
another); the other detectors in the score file are reported beside it for comparison.

Gait (`gait-compact-casiab`, `gei-pca-lda-casiab`) is scored here, sequence against template
as the pipeline does (about two minutes of CPU), on CASIA-B test subjects 075-124: both models were
trained on 001-074 and score those people better than strangers, while an operator's gallery is
always strangers, so the shipped map is fitted (and cross-validated) on 075-124 only. The map
fitted on 001-074 is reported beside it to show what that would cost. Body
(`mediapipe-pose-anthropometric`) reuses the half-track poses that `benchmarks/body_shape.py`
caches. `--only gait,body` refits just those and keeps the others.

    .venv/bin/python benchmarks/lfw_dlib.py
    .venv/bin/python benchmarks/voice_librispeech.py
    nice -n 10 .venv/bin/python benchmarks/body_shape.py
    .venv/bin/python benchmarks/fit_default_calibration.py [--only face,voice,gait,body]

Writes fusion/default_calibration.json and benchmarks/results/calibration.json and .md.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.fusion.calibration import (  # noqa: E402
    DEFAULTS_PATH,
    LinearCalibration,
    load_default,
    save_defaults,
)
from biofuse.fusion.metrics import cllr, eer  # noqa: E402

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


def voice_pairs(path: Path, vad: str) -> PairScores:
    """LibriSpeech/VCTK/VCC trials on the turns of speech detector `vad`, since the system
    embeds VAD turns (the default calibration uses the default detector's).

    Folds are by speaker: a fold's test pairs have both speakers in it, its training pairs
    neither, so no voice is seen on both sides. Pairs across two folds are only used for
    fitting (the fold that holds neither speaker out).
    """
    rows = read_tsv(path)
    column = f"cosine_vad_turns_{vad}"
    if not rows or column not in rows[0]:
        raise SystemExit(
            f"{path} has no column {column}: run benchmarks/voice_librispeech.py --vads {vad}"
        )
    rows = [r for r in rows if r[column] != ""]  # utterances with no turn >= 1 s: no embedding
    scores = np.array([float(r[column]) for r in rows])
    labels = np.array([int(r["same"]) for r in rows])
    fold_of = speaker_folds([r["speaker1"] for r in rows] + [r["speaker2"] for r in rows])
    f1 = np.array([fold_of[r["speaker1"]] for r in rows])
    f2 = np.array([fold_of[r["speaker2"]] for r in rows])

    def corpus(side: int) -> np.ndarray:
        return np.array([r[f"speaker{side}"].split("-", 1)[0] for r in rows])

    variant = f"VAD turns ({vad}), quality-weighted template per utterance"
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


def subject_folds(ids: list[str]) -> dict[str, int]:
    """Subjects (or tracks) dealt round-robin into the 3 folds."""
    return {x: FOLDS[i % len(FOLDS)] for i, x in enumerate(sorted(set(ids)))}


def fold_masks(fold_of: dict[str, int], a: list[str], b: list[str]) -> tuple[dict, dict]:
    """Train on pairs with neither side in the held-out fold, test on pairs with both in it."""
    f1 = np.array([fold_of[x] for x in a])
    f2 = np.array([fold_of[x] for x in b])
    return {k: (f1 != k) & (f2 != k) for k in FOLDS}, {k: (f1 == k) & (f2 == k) for k in FOLDS}


GAIT_PROBES = (("nm-05", "nm-06"), ("bg-01", "bg-02"), ("cl-01", "cl-02"))
GAIT_MAX_FRAMES = 30  # the compact CNN on CPU: 30 evenly spaced frames keep the fit to minutes


def gait_pairs(name: str, seed: int = 0, unseen: bool = True) -> PairScores:
    """CASIA-B test subjects 075-124 (the training subjects 001-074 if not `unseen`), scored as
    the pipeline scores a probe track: against each identity's template, in the model's metric.

    Both gait models were trained on subjects 001-074, so their genuine scores there are
    better than on new people: a map fitted there is overconfident on a real gallery.

    Per subject: a gallery template of nm-01..04 at one random view (quality-weighted,
    `biofuse.fusion.templates.build_templates` with the model's metric) and three probe sequences,
    one NM (nm-05/06), one BG, one CL, each at its own random view (so most pairs are
    cross-view). Every probe is scored against every subject's template.
    """
    from biofuse.flows.models import GaitEmbedder
    from biofuse.fusion.scores import metric_for_model, similarity
    from biofuse.fusion.templates import build_templates
    from biofuse.modalities.gait.casiab import (
        GALLERY_CONDITIONS,
        TEST_SUBJECTS,
        TRAIN_SUBJECTS,
        VIEWS,
        read_subject,
        unpack,
    )
    from biofuse.modalities.items import SilhouetteSequence

    from biofuse.config import Settings, shared_data_dir

    root = shared_data_dir() / "casiab"
    embedder = GaitEmbedder(Settings(gait_model=name))
    if hasattr(embedder.extractor, "max_frames_per_sequence"):
        embedder.extractor.max_frames_per_sequence = GAIT_MAX_FRAMES
    embedder.prepare("cpu")
    metric = metric_for_model(embedder.model_id)
    rng = np.random.default_rng(seed)
    gallery: list[SilhouetteSequence] = []
    owners: list[str] = []
    probes: list[SilhouetteSequence] = []
    probe_subject: list[str] = []
    probe_kind: list[str] = []
    for subject in TEST_SUBJECTS if unseen else TRAIN_SUBJECTS:
        stored = read_subject(root, subject)
        view = str(rng.choice(VIEWS))
        for cond in GALLERY_CONDITIONS:
            if (cond, view) in stored:
                gallery.append(SilhouetteSequence(f"{subject}/{cond}", unpack(stored[cond, view])))
                owners.append(subject)
        for conds in GAIT_PROBES:
            have = [k for k in stored if k[0] in conds]
            if have:
                cond, v = have[rng.integers(len(have))]
                probes.append(SilhouetteSequence(f"{subject}/{cond}/{v}", unpack(stored[cond, v])))
                probe_subject.append(subject)
                probe_kind.append(cond[:2].upper())
    g = embedder.embed(gallery)
    owner = dict(zip([s.key for s in gallery], owners))
    names, templates = build_templates(g.vectors, g.quality, [owner[k] for k in g.keys], metric)
    p = embedder.embed(probes)
    by_key = {s.key: (subj, kind) for s, subj, kind in zip(probes, probe_subject, probe_kind)}
    table = similarity(p.vectors, templates, metric)
    scores, labels, a, b, kinds = [], [], [], [], []
    for i, key in enumerate(p.keys):
        subj, kind = by_key[key]
        for j, ident in enumerate(names):
            scores.append(float(table[i, j]))
            labels.append(int(ident == subj))
            a.append(subj)
            b.append(ident)
            kinds.append(kind)
    fold_of = subject_folds(list(names))
    train, test = fold_masks(fold_of, a, b)
    kinds_arr = np.array(kinds)
    capped = hasattr(embedder.extractor, "max_frames_per_sequence")
    cap = f", at most {GAIT_MAX_FRAMES} evenly spaced frames per sequence" if capped else ""
    score_name = (
        "minus part-averaged Euclidean distance of raw gait-compact part embeddings"
        if metric != "cosine"
        else f"cosine of {name} unit rows"
    )
    subjects_text = (
        "CASIA-B test subjects 075-124, not seen in training"
        if unseen
        else "CASIA-B training subjects 001-074, no test subject 075-124"
    )
    return PairScores(
        model=name,
        data=(
            f"{subjects_text}, {len(names)} subjects (../shared/data/casiab): per subject a "
            "template of nm-01..04 at one random view "
            f"(seed {seed}, quality-weighted, the model's metric) and 3 probe sequences (one "
            f"nm-05/06, one bg, one cl, each at a random view, mostly cross-view){cap}; every "
            "probe against every subject's template"
        ),
        score_name=score_name,
        scores=np.array(scores),
        labels=np.array(labels),
        train=train,
        test=test,
        folds_how="3 folds of subjects (round-robin); fit on pairs with neither subject in the "
        "held-out fold, evaluate on pairs with both in it",
        subsets={f"{k}_probe": kinds_arr == k for k in ("NM", "BG", "CL")},
    )


def body_pairs() -> PairScores:
    """Pedestrian-video half tracks of benchmarks/body_shape.py (its cached tracks and poses):
    genuine = the two halves of a track, impostor = halves of two tracks on screen together
    whose boxes never overlap (certainly two people; "any two tracks" would count a person
    who left and came back as an impostor).
    """
    sys.path.insert(0, str(REPO / "benchmarks"))
    from biofuse.flows.models import BodyEmbedder
    from body_shape import MAX_BOX_HEIGHT, POSE_CACHE, all_half_sequences, trials
    from body_tracks import CACHE, concurrent_and_apart, load_tracks

    from biofuse.config import Settings

    for cache in (CACHE, POSE_CACHE):
        if not cache.is_file():
            raise SystemExit(f"{cache} not found: run benchmarks/body_shape.py first")
    tracks = [
        t for t in load_tracks() if np.median([b[3] - b[1] for b in t.boxes]) < MAX_BOX_HEIGHT
    ]
    by_id = {t.track_id: t for t in tracks}
    embedder = BodyEmbedder(Settings())
    embedder.prepare("cpu")
    emb = embedder.embed(all_half_sequences([], tracks))
    keys, vectors = emb.keys, emb.vectors
    sims = vectors @ vectors.T  # unit rows: cosine, what the gallery uses
    trial_sets = trials(keys, vectors, by_id)  # body_shape's own pair rules, for the counts
    scores, labels, a, b = [], [], [], []
    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            ti, tj = int(keys[i][:-1]), int(keys[j][:-1])
            if ti != tj and not concurrent_and_apart(by_id[ti], by_id[tj]):
                continue
            scores.append(float(sims[i, j]))
            labels.append(int(ti == tj))
            a.append(str(ti))
            b.append(str(tj))
    assert sum(labels) == len(trial_sets["genuine"])
    assert len(labels) - sum(labels) == len(trial_sets["impostor_concurrent"])
    train, test = fold_masks(subject_folds(a + b), a, b)
    return PairScores(
        model="mediapipe-pose-anthropometric",
        data=(
            f"pedestrian video opencv_vtest_pedestrians.avi (../shared/data/video), "
            f"{len(tracks)} HOG person tracks split into halves ({len(keys)} half-track pose "
            "samples, benchmarks/body_shape.py caches): same = the two halves of a track, "
            "different = halves of two tracks on screen together >= 1 s whose boxes never overlap"
        ),
        score_name="cosine of mediapipe-pose-anthropometric unit rows",
        scores=np.array(scores),
        labels=np.array(labels),
        train=train,
        test=test,
        folds_how="3 folds of tracks (round-robin); fit on pairs with neither track in the "
        "held-out fold, evaluate on pairs with both in it",
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


def min_cllr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Cllr after the best monotonic map (PAV) on these very pairs: the calibration floor."""
    return cllr_of(pav_llrs(scores, labels), labels)


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
            "min_cllr": min_cllr(s[test], y[test]),
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
            "min_cllr": min_cllr(cv_scores[m], cv_y[m]),
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
            "min_cllr": min_cllr(cv_scores, cv_y),
            "subsets": subsets,
            "slope_spread": [
                min(f["slope"] for f in per_fold.values()),
                max(f["slope"] for f in per_fold.values()),
            ],
        },
        "all_pairs_in_sample": {
            "cllr_fitted": cllr_of(final.transform(s), y),
            "min_cllr": min_cllr(s, y),
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
        if (seen := r.get("fitted_on_training_subjects")) is not None:
            lines.append(
                f"- Fitted on training subjects instead (001-074, which the model was trained on; "
                f"shipped before): slope {seen['fitted']['slope']:.2f}, offset "
                f"{seen['fitted']['offset']:.2f}, CV Cllr "
                f"{seen['cv_cllr_on_training_subjects']:.3f} "
                f"(min {seen['cv_min_cllr_on_training_subjects']:.3f}, EER "
                f"{100 * seen['eer_all_pairs']:.2f} %) on those people, but Cllr "
                f"**{seen['cllr_on_unseen_all_pairs']:.3f}** on unseen (all pairs above; "
                f"{seen['cllr_on_unseen_cv_pairs']:.3f} on the CV test pairs): overconfident on "
                "people the model never saw, as every operator's gallery is."
            )
        for vad, other in r.get("other_vads", {}).items():
            lines.append(
                f"- Same recipe on {vad} VAD turns instead ({other['pairs']['same']} same / "
                f"{other['pairs']['different']} different): CV Cllr **{other['cv_cllr']:.3f}** "
                f"(min {other['cv_min_cllr']:.3f}), EER {100 * other['eer_all_pairs']:.2f} %"
                + "".join(
                    f"; {n.replace('_', ' ')} CV Cllr {sub['cllr']:.3f}"
                    for n, sub in other["cv_subsets"].items()
                )
                + "."
            )
        lines.append("")
    lines += [
        "The LLRs come from logistic regression with balanced class weights, so they are "
        "prior-free log-likelihood ratios (natural log), not log posterior odds at the data's "
        "own mix of same/different pairs.",
        "",
    ]
    return "\n".join(lines)


def fitted_on_training_subjects(name: str, unseen: PairScores, date: str) -> dict:
    """The map a fit on the model's own training subjects (001-074) would ship, on `unseen`.

    Kept as a comparison line: it is what was shipped before, and its Cllr on strangers,
    against the CV Cllr of the map fitted on strangers, shows why it no longer is.
    """
    seen = gait_pairs(name, unseen=False)
    calibration, report = evaluate(seen, date)
    cv_pairs = np.any([unseen.test[k] for k in FOLDS], axis=0)  # the CV figure's pairs
    s, y = unseen.scores, unseen.labels
    return {
        "data": seen.data,
        "pairs": report["pairs"],
        "fitted": {k: report["fitted"][k] for k in ("slope", "offset", "max_abs_llr")},
        "eer_all_pairs": report["eer_all_pairs"],
        "cv_cllr_on_training_subjects": report["cross_validation"]["cllr"],
        "cv_min_cllr_on_training_subjects": report["cross_validation"]["min_cllr"],
        "cllr_on_unseen_all_pairs": cllr_of(calibration.transform(s), y),
        "cllr_on_unseen_cv_pairs": cllr_of(calibration.transform(s[cv_pairs]), y[cv_pairs]),
    }


def voice_other_vads(path: Path, fitted_vad: str, date: str) -> dict:
    """CV Cllr, min Cllr and EER of the same recipe on the turns of every other detector in the
    score file, to compare speech detectors on calibration as well as on EER."""
    head = read_tsv(path)[0]
    prefix = "cosine_vad_turns_"
    out = {}
    for vad in sorted(c.removeprefix(prefix) for c in head if c.startswith(prefix)):
        if vad == fitted_vad:
            continue
        _, report = evaluate(voice_pairs(path, vad), date)
        out[vad] = {
            "pairs": report["pairs"],
            "fitted": {k: report["fitted"][k] for k in ("slope", "offset")},
            "eer_all_pairs": report["eer_all_pairs"],
            "cv_cllr": report["cross_validation"]["cllr"],
            "cv_min_cllr": report["cross_validation"]["min_cllr"],
            "cv_subsets": report["cross_validation"]["subsets"],
        }
    return out


GROUPS = {
    "face": ("dlib-resnet",),
    "voice": ("resemblyzer-ge2e",),
    "gait": ("gait-compact-casiab", "gei-pca-lda-casiab"),
    "body": ("mediapipe-pose-anthropometric",),
}


def main() -> None:
    from biofuse.config import Settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--face", type=Path, default=RESULTS / "lfw_dlib_scores.tsv")
    parser.add_argument("--voice", type=Path, default=RESULTS / "voice_librispeech_scores.tsv")
    parser.add_argument(
        "--voice-vad",
        default=Settings.model_fields["vad"].default,
        help="whose VAD turns the voice calibration is fitted on (default: the configured "
        "default detector, since that is what the pipeline embeds)",
    )
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help="comma-separated groups to (re)fit: face,voice,gait,body; the other models keep "
        "their entries in default_calibration.json and calibration.json",
    )
    parser.add_argument(
        "--no-save", action="store_true", help="report only; leave default_calibration.json"
    )
    args = parser.parse_args()
    only = [g.strip() for g in args.only.split(",") if g.strip()]
    if unknown := set(only) - set(GROUPS):
        raise SystemExit(f"--only: unknown group(s) {sorted(unknown)}; use {', '.join(GROUPS)}")

    date = dt.date.today().isoformat()
    sources = {
        "dlib-resnet": lambda: lfw_pairs(args.face),
        "resemblyzer-ge2e": lambda: voice_pairs(args.voice, args.voice_vad),
        "gait-compact-casiab": lambda: gait_pairs("gait-compact-casiab", unseen=True),
        "gei-pca-lda-casiab": lambda: gait_pairs("gei-pca-lda-casiab", unseen=True),
        "mediapipe-pose-anthropometric": body_pairs,
    }
    fitted = {k: load_default(k) for k in json.loads(DEFAULTS_PATH.read_text())}
    previous = RESULTS / "calibration.json"
    models = json.loads(previous.read_text())["models"] if previous.is_file() else {}
    for group in only:
        for name in GROUPS[group]:
            start = time.perf_counter()
            pairs = sources[name]()
            fitted[name], models[name] = evaluate(pairs, date)
            if group == "gait":
                models[name]["fitted_on_training_subjects"] = fitted_on_training_subjects(
                    name, pairs, date
                )
            if group == "voice":
                models[name]["other_vads"] = voice_other_vads(args.voice, args.voice_vad, date)
            print(f"{name}: fitted in {time.perf_counter() - start:.0f} s", flush=True)
    order = [m for g in GROUPS.values() for m in g]
    models = {
        m: models[m] for m in sorted(models, key=lambda m: order.index(m) if m in order else 99)
    }
    report = {
        "benchmark": "fit_default_calibration",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": ".venv/bin/python benchmarks/fit_default_calibration.py --only "
        + ",".join(only),
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
