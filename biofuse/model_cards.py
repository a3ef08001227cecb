"""Model cards for every registry entry, rendered into docs/models.md.

The registry (`biofuse.registry.SPECS`) says what a model is, its files, licence and
provenance; the card adds what it was trained on, its known limits and what it must not
decide alone; the figures are read from the files `benchmarks/` wrote, so the card shows
what this project measured, with the script that measured it. `tests/test_model_cards.py`
fails when an entry has no card or docs/models.md is stale:

    .venv/bin/python -m biofuse.model_cards          # rewrites docs/models.md
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biofuse.registry import SPECS

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class Figure:
    label: str
    results_file: str  # under benchmarks/results
    read: Callable[[dict[str, Any]], str]
    script: str


@dataclass(frozen=True)
class Card:
    trained_on: str
    limits: tuple[str, ...]
    not_alone: str
    figures: tuple[Figure, ...] = ()


def _lfw_model(name: str) -> Callable[[dict[str, Any]], str]:
    def read(d: dict[str, Any]) -> str:
        row = next(m for m in d["models"] if m["model"] == name)
        k = row["all_pairs"]["kfold_accuracy"]
        return (
            f"{100 * k['mean']:.2f} % ± {100 * k['std']:.2f} (3-fold), "
            f"TAR@FAR=1e-2 {100 * row['all_pairs']['tar_at_far_1e-2']:.1f} %, "
            f"detector {row.get('detector', 'hog')}"  # runs before MTCNN did not record it
        )

    return read


def _gender_ratio(name: str) -> Callable[[dict[str, Any]], str]:
    def read(d: dict[str, Any]) -> str:
        m = d["models"][name]
        groups = m["groups"]
        parts = []
        for target in ("0.001",):
            for g, info in groups.items():
                r = info["at_fmr"][target]
                parts.append(
                    f"{g}: FNMR {100 * r['fnmr']:.1f} %, FMR within {100 * r['fmr_within']:.3f} %"
                )
        return f"at global FMR 1e-3: {'; '.join(parts)}"

    return read


def _gait(name: str) -> Callable[[dict[str, Any]], str]:
    def read(d: dict[str, Any]) -> str:
        r = d["models"][name]["rank1"]
        return f"rank-1 NM {r['NM']:.1f} / BG {r['BG']:.1f} / CL {r['CL']:.1f} %"

    return read


def _voice(d: dict[str, Any]) -> str:
    v = d["variants"][f"vad_turns_{d['default_vad']}"]["all_pairs"]
    return f"EER {100 * v['eer']:.2f} %, TAR@FAR=1e-2 {100 * v['tar_at_far_1e-2']:.1f} %"


def _body(d: dict[str, Any]) -> str:
    return f"EER {100 * d['eer']['all']:.1f} % (all pairs), {100 * d['eer']['concurrent']:.1f} %"


LFW = "LFW lfw-dev 900 pairs through the pipeline"
PUBLISHED_ONLY = "no figure here yet: add the official weights and run the script"

CARDS: dict[str, Card] = {
    "dlib-resnet": Card(
        trained_on="about 3 million faces of 7,485 people (VGG, FaceScrub and scraped images; "
        "per dlib's author)",
        limits=(
            "faces under about 24 px wide verify poorly (lfw-dev ladder: 71 % accuracy at 16 px "
            "with MTCNN; dlib's HOG detector finds none at 24 px or below)",
            "128-d embedding trained on web photos, not surveillance frames",
            "error rates differ by gender on lfw-dev (see the demographic figure)",
        ),
        not_alone="Naming a person from one low-resolution or profile frame",
        figures=(
            Figure(LFW, "lfw_pipeline.json", _lfw_model("dlib-resnet"), "lfw_pipeline.py"),
            Figure(
                "lfw-dev by gender",
                "demographics.json",
                _gender_ratio("dlib-resnet"),
                "demographics.py",
            ),
            Figure(
                "lfw-dev by gender, probe faces 16 px wide",
                "demographics.json",
                _gender_ratio("dlib-resnet@16px"),
                "demographics.py",
            ),
        ),
    ),
    **{
        f"adaface-ir{depth}": Card(
            trained_on="the training set of the checkpoint the user adds (MS1MV2/MS1MV3, "
            "WebFace4M or WebFace12M; recorded with --training-set)",
            limits=(
                "the face detector in front of it sets the smallest face found",
                "not yet measured here on real weights (none ship offline)",
            ),
            not_alone="Naming a person from one low-resolution frame",
            figures=(
                Figure(
                    LFW, "lfw_pipeline.json", _lfw_model(f"adaface-ir{depth}"), "lfw_pipeline.py"
                ),
            ),
        )
        for depth in (18, 50, 101)
    },
    "resemblyzer-ge2e": Card(
        trained_on="LibriSpeech, VoxCeleb 1 and 2 (GE2E, Resemble AI)",
        limits=(
            "speech turns under about 1.5 s give unreliable embeddings",
            "far-field, noisy or overlapped speech raises errors; diarization DER is 44 % on AMI",
        ),
        not_alone="Naming a speaker from one short or noisy turn",
        figures=(
            Figure(
                "LibriSpeech/VCTK/VCC 265 target trials, VAD turns",
                "voice_librispeech.json",
                _voice,
                "voice_librispeech.py",
            ),
        ),
    ),
    "kprpe-vit-base-webface4m": Card(
        trained_on="WebFace4M (CVLface release, AdaFace loss)",
        limits=(
            "needs the five landmarks on the aligned chip; a bad landmark moves its encoding",
            "not yet wired into the face path: registry entry and exact graph only",
        ),
        not_alone="Naming a person from one low-quality frame",
        figures=(),
    ),
    "ecapa-voxceleb": Card(
        trained_on="VoxCeleb 1 and 2 (SpeechBrain release)",
        limits=("its diarization threshold is not tuned here",),
        not_alone="Naming a speaker from one short or noisy turn",
        figures=(),
    ),
    "gaitbase-casiab": Card(
        trained_on="CASIA-B subjects 001-074 (OpenGait release)",
        limits=(
            "CASIA-B is 124 young people in one lab corridor; clothing changes cut accuracy",
            "needs clean silhouettes from a roughly side or oblique view",
        ),
        not_alone="Naming a person: gait is supporting evidence",
        figures=(),
    ),
    "deepgaitv2-casiab": Card(
        trained_on="CASIA-B subjects 001-074 (OpenGait release, DeepGaitV2_casiab.yaml)",
        limits=(
            "CASIA-B is 124 young people in one lab corridor; clothing changes cut accuracy",
            "needs clean silhouettes from a roughly side or oblique view",
        ),
        not_alone="Naming a person: gait is supporting evidence",
        figures=(),
    ),
    "gei-pca-lda-casiab": Card(
        trained_on="CASIA-B subjects 001-074 (by this project, benchmarks/gait_train_gei.py)",
        limits=("classical GEI features: weak across views and under clothing change",),
        not_alone="Naming a person: gait is supporting evidence",
        figures=(
            Figure(
                "CASIA-B test 075-124, cross-view",
                "gait_casiab.json",
                _gait("gei-pca-lda-casiab"),
                "gait_casiab_protocol.py",
            ),
        ),
    ),
    "gait-compact-casiab": Card(
        trained_on="CASIA-B subjects 001-074 (by this project, benchmarks/gait_train_compact.py)",
        limits=(
            "294k parameters trained on one lab data set; clothing change (CL) is its weak case",
        ),
        not_alone="Naming a person: gait is supporting evidence",
        figures=(
            Figure(
                "CASIA-B test 075-124, cross-view",
                "gait_casiab.json",
                _gait("gait-compact-casiab"),
                "gait_casiab_protocol.py",
            ),
        ),
    ),
    "mediapipe-pose-anthropometric": Card(
        trained_on="MediaPipe BlazePose GHUM (Google's model card); the proportions are ours",
        limits=("bone proportions from 2D landmarks change with pose and view",),
        not_alone="Any decision: with an EER near 30 % it is fused evidence only",
        figures=(Figure("pedestrian video tracks", "body_shape.json", _body, "body_shape.py"),),
    ),
    "clip3dreid-student-rn50": Card(
        trained_on="the training sets of the checkpoint the user adds",
        limits=("not measured here on real weights (none ship offline)",),
        not_alone="Any decision: body shape is fused evidence only",
        figures=(),
    ),
}


def _figure(f: Figure, results: Path) -> str:
    path = results / f.results_file
    try:
        value = f.read(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, StopIteration, TypeError):
        value = PUBLISHED_ONLY
    return f"- {f.label}: {value} (`benchmarks/{f.script}`)"


def render(results: Path = RESULTS) -> str:
    missing = sorted(set(SPECS) - set(CARDS))
    if missing:
        raise KeyError(f"registry entries without a model card: {', '.join(missing)}")
    lines = [
        "# Model cards",
        "",
        "Generated from the model registry by `python -m biofuse.model_cards`; do not edit by "
        "hand. Figures are read from `benchmarks/results/` and name the script that wrote them.",
        "",
    ]
    for name, spec in SPECS.items():
        card = CARDS[name]
        ships = (
            f"ships inside the `{spec.package}` package"
            if spec.package
            else f"user-provided: `biofuse models add {name} PATH`"
        )
        sha = getattr(spec, "sha256", None)
        lines += [
            f"## {name}",
            "",
            f"{spec.description}.",
            "",
            f"- Modality: {spec.modality}",
            f"- Weights: {ships}; {spec.provenance}"
            + (f"; sha256 `{sha}`" if isinstance(sha, str) and sha else ""),
            f"- Licence: {spec.licence}",
            f"- Trained on: {card.trained_on}",
            "",
            "Measured in this project:",
            "",
            *([_figure(f, results) for f in card.figures] or [f"- {PUBLISHED_ONLY}"]),
            "",
            "Known limits:",
            "",
            *[f"- {limit}" for limit in card.limits],
            "",
            f"Must not be used alone for: {card.not_alone[:1].lower()}{card.not_alone[1:]}.",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else REPO_ROOT / "docs" / "models.md"
    out.write_text(render())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
