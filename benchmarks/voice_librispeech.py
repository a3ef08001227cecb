"""Speaker verification with the offline voice default (Resemblyzer GE2E) on voice-dev.

Every cross-utterance pair of the 108 utterances in `voice-dev/librispeech` (18 speakers from
LibriSpeech test-other, VCTK and VCC2016) is one trial, scored by the cosine of two utterance
embeddings. Three ways to embed an utterance:

- `whole`: our ResemblyzerExtractor on the whole utterance (volume normalised, no trimming);
- `vad_turns_<vad>`: our VAD turns (each of `--vads`, detector defaults) embedded one by one,
  then the quality-weighted mean (`voice_template`), as the pipeline embeds a person's speech;
  utterances without any turn of >= 1 s drop out with their trials;
- `resemblyzer_reference`: Resemblyzer's own `preprocess_wav` + `embed_utterance`, which is how
  the data README's baseline was measured, to show this run reproduces it.

Also the real-time factor of the embedding on CPU (compute seconds / audio seconds), each VAD
timed in the same run (alternating) so that the machine's load is the same for all of them.

    .venv/bin/python benchmarks/voice_librispeech.py [--threads 2] [--repeats 3] \
        [--vads webrtc,silero]

Writes benchmarks/results/voice_librispeech.json and .md, and the per-pair cosines of every
variant to voice_librispeech_scores.tsv (read by fit_default_calibration.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import TypeVar

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.modalities.base import Embeddings  # noqa: E402
from biofuse.modalities.voice import (  # noqa: E402
    AudioSegment,
    ResemblyzerExtractor,
    detect_speech,
    turn_segments,
    voice_template,
)

from biofuse.config import Settings, shared_data_dir  # noqa: E402
from biofuse.registry import Registry  # noqa: E402

T = TypeVar("T")
SR = 16000
FAR_TARGET = 1e-2
RESULTS = REPO / "benchmarks" / "results"


try:
    from biofuse.fusion.metrics import eer, tar_at_far
except ImportError:  # fusion/metrics.py not written yet: the same definitions, locally

    def _roc(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        thresholds = np.unique(np.concatenate([genuine, impostor]))[::-1]
        tar = (genuine[None, :] >= thresholds[:, None]).mean(1)
        far = (impostor[None, :] >= thresholds[:, None]).mean(1)
        return np.concatenate([[0.0], far]), np.concatenate([[0.0], tar])

    def eer(genuine: np.ndarray, impostor: np.ndarray) -> float:
        far, tar = _roc(np.asarray(genuine), np.asarray(impostor))
        diff = (1 - tar) - far
        i = int(np.argmax(diff <= 0))
        if diff[i] == 0:
            return float(far[i])
        alpha = diff[i - 1] / (diff[i - 1] - diff[i])
        return float(far[i - 1] + alpha * (far[i] - far[i - 1]))

    def tar_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> float:
        fars, tars = _roc(np.asarray(genuine), np.asarray(impostor))
        return float(tars[fars <= far].max())


@dataclass(frozen=True)
class Utterance:
    path: Path
    speaker: str
    corpus: str
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SR


def load_utterances(root: Path) -> list[Utterance]:
    import soundfile

    out = []
    with open(root / "utterances.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            samples, rate = soundfile.read(root / row["path"], dtype="float32")
            if rate != SR:
                raise SystemExit(f"{row['path']}: {rate} Hz, expected {SR}")
            corpus = row["speaker"].split("-", 1)[0]
            out.append(Utterance(root / row["path"], row["speaker"], corpus, samples))
    return out


# -- three ways to embed an utterance ----------------------------------------------------------


def embed_whole(ex: ResemblyzerExtractor, utts: list[Utterance]) -> dict[int, np.ndarray]:
    emb = ex.embed([AudioSegment(str(i), u.samples) for i, u in enumerate(utts)])
    return {int(k): v for k, v in zip(emb.keys, emb.vectors, strict=True)}


def embed_vad_turns(
    ex: ResemblyzerExtractor, utts: list[Utterance], vad: str
) -> dict[int, np.ndarray]:
    segments = []
    for i, u in enumerate(utts):
        segments += turn_segments(u.samples, detect_speech(u.samples, SR, method=vad), str(i))
    emb = ex.embed(segments)
    out = {}
    for i in range(len(utts)):
        rows = [j for j, key in enumerate(emb.keys) if key.split("@", 1)[0] == str(i)]
        if rows:
            keys = [emb.keys[j] for j in rows]
            part = Embeddings(emb.vectors[rows], emb.quality[rows], keys, emb.model_id)
            out[i] = voice_template(part)
    return out


def reference_embedder(device: str = "cpu") -> Callable[[list[Utterance]], dict[int, np.ndarray]]:
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder(device=device, verbose=False)

    def embed(utts: list[Utterance]) -> dict[int, np.ndarray]:
        return {
            i: encoder.embed_utterance(preprocess_wav(u.samples, source_sr=None))
            for i, u in enumerate(utts)
        }

    return embed


# -- scoring -------------------------------------------------------------------------------------


def verification(utts: list[Utterance], vectors: dict[int, np.ndarray]) -> dict:
    """EER and TAR@FAR over every pair of embedded utterances, overall and within corpus."""
    pairs = list(combinations(sorted(vectors), 2))
    score = np.array([float(vectors[a] @ vectors[b]) for a, b in pairs])
    same = np.array([utts[a].speaker == utts[b].speaker for a, b in pairs])
    corpus_a = np.array([utts[a].corpus for a, _ in pairs])
    within = corpus_a == np.array([utts[b].corpus for _, b in pairs])

    def block(mask: np.ndarray) -> dict:
        gen, imp = score[mask & same], score[mask & ~same]
        return {
            "eer": eer(gen, imp),
            "tar_at_far_1e-2": tar_at_far(gen, imp, FAR_TARGET),
            "target_trials": int(gen.size),
            "nontarget_trials": int(imp.size),
            "mean_target_cosine": float(gen.mean()),
            "mean_nontarget_cosine": float(imp.mean()),
        }

    result = {
        "utterances_embedded": len(vectors),
        "utterances_without_embedding": [
            str(utts[i].path.relative_to(utts[i].path.parents[1]))
            for i in range(len(utts))
            if i not in vectors
        ],
        "all_pairs": block(np.ones_like(same)),
        "within_corpus": block(within),
    }
    for corpus in sorted({u.corpus for u in utts}):
        result[f"corpus_{corpus}"] = block(within & (corpus_a == corpus))
    return result


def write_pair_scores(
    path: Path, utts: list[Utterance], variants: dict[str, dict[int, np.ndarray]]
) -> None:
    """Every cross-utterance pair with each variant's cosine (blank where it has no embedding).

    Kept so that calibration can be fitted and cross-validated without re-embedding.
    """

    def name(u: Utterance) -> str:
        return str(u.path.relative_to(u.path.parents[1]))

    head = ["utt1", "utt2", "speaker1", "speaker2", "same"] + [
        "cosine" if v == "whole" else f"cosine_{v}" for v in variants
    ]
    lines = ["\t".join(head)]
    for a, b in combinations(range(len(utts)), 2):
        cells = [name(utts[a]), name(utts[b]), utts[a].speaker, utts[b].speaker]
        cells.append(str(int(utts[a].speaker == utts[b].speaker)))
        for vectors in variants.values():
            ok = a in vectors and b in vectors
            cells.append(f"{float(vectors[a] @ vectors[b]):.6f}" if ok else "")
        lines.append("\t".join(cells))
    path.write_text("\n".join(lines) + "\n")


def timed(fn: Callable[[], T], repeats: int) -> tuple[T, list[float]]:
    """The last result and the wall time of each of `repeats` runs."""
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return out, times


def timed_together(fns: dict[str, Callable[[], T]], repeats: int) -> dict[str, tuple[T, list]]:
    """`timed` for several functions, run in turn within each repeat (the order alternating),
    so that a change in the machine's load between repeats falls on all of them alike."""
    results: dict[str, T] = {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(max(1, repeats)):
        for name in names if r % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            results[name] = fns[name]()
            times[name].append(time.perf_counter() - start)
    return {name: (results[name], times[name]) for name in names}


# -- report -------------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Voice: speaker verification on voice-dev/librispeech (Resemblyzer GE2E)",
        "",
        f"Written by `benchmarks/voice_librispeech.py` on {report['date']}. "
        f"{report['utterances']} utterances, {report['audio_s']:.1f} s of audio, 18 speakers; "
        "every cross-utterance pair is a trial, score = cosine of utterance embeddings.",
        "",
        "| embedding | trials (target / non-target) | EER all pairs | TAR@FAR=1e-2 | "
        "EER within corpus | EER LS | EER VCTK | EER VCC2016 | utterances dropped |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, res in report["variants"].items():
        a, w = res["all_pairs"], res["within_corpus"]
        lines.append(
            f"| {name} | {a['target_trials']} / {a['nontarget_trials']} | {100 * a['eer']:.2f} % | "
            f"{100 * a['tar_at_far_1e-2']:.1f} % | {100 * w['eer']:.2f} % | "
            f"{100 * res['corpus_LS']['eer']:.2f} % | {100 * res['corpus_VCTK']['eer']:.2f} % | "
            f"{100 * res['corpus_VCC2016']['eer']:.2f} % | "
            f"{len(res['utterances_without_embedding'])} |"
        )
    lines += [
        "",
        "Data README baseline (Resemblyzer `preprocess_wav` + `embed_utterance`): EER 0.72 % all "
        "pairs, 1.40 % within corpus. With 270 target trials one error moves EER by ~0.4 %.",
        "",
        "Mean cosine, target / non-target (all pairs): "
        + "; ".join(
            f"{n} {r['all_pairs']['mean_target_cosine']:.3f} / "
            f"{r['all_pairs']['mean_nontarget_cosine']:.3f}"
            for n, r in report["variants"].items()
        ),
        "",
        "## Real-time factor (CPU, compute seconds / audio seconds; best of repeats)",
        "",
        "| what | best RTF | all runs |",
        "| --- | --- | --- |",
    ]
    for name, rtf in report["rtf"].items():
        runs = ", ".join(f"{x:.4f}" for x in rtf["all"])
        lines.append(f"| {name} | {rtf['best']:.4f} | {runs} |")
    lines.append("")
    for vad in report["vads"]:
        dropped = report["variants"][f"vad_turns_{vad}"]["utterances_without_embedding"]
        lines.append(
            f"`vad_turns_{vad}` drops {len(dropped)} utterance(s) with no speech turn of at least "
            f"1 s ({', '.join(dropped) or 'none'}): missing evidence is absent, so their trials "
            "are not scored."
        )
    lines += [
        "",
        f"The default VAD (`biofuse.config.Settings.vad`) at the time of the run: "
        f"`{report['default_vad']}`.",
        "",
        f"Environment: Python {env['python']}, torch {env['torch']} ({env['torch_threads']} "
        f"threads), {env['cpus']} CPUs, load average before the run {env['load_before']}, "
        f"{env['machine']}. Model `{report['model_id']}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument(
        "--vads", default="webrtc,silero", help="comma-separated speech detectors to compare"
    )
    args = parser.parse_args()
    vads = [v.strip() for v in args.vads.split(",") if v.strip()]

    import torch

    torch.set_num_threads(args.threads)
    root = shared_data_dir() / "voice-dev" / "librispeech"
    if not (root / "utterances.tsv").exists():
        raise SystemExit(f"voice-dev data not found at {root}; set BIOFUSE_SHARED_DATA")
    load_before = [round(x, 2) for x in os.getloadavg()]
    utts = load_utterances(root)
    audio_s = sum(u.duration_s for u in utts)

    with tempfile.TemporaryDirectory() as models_dir:
        model = Registry(Path(models_dir)).resolve("resemblyzer-ge2e")
    extractor = ResemblyzerExtractor(model)
    extractor.prepare("cpu")
    reference = reference_embedder("cpu")

    for vad in vads:  # load each detector's model before the clock runs
        detect_speech(utts[0].samples, SR, method=vad)
    whole, t_whole = timed(lambda: embed_whole(extractor, utts), args.repeats)
    by_vad = timed_together(
        {vad: (lambda v=vad: embed_vad_turns(extractor, utts, v)) for vad in vads}, args.repeats
    )
    vad_only = timed_together(
        {
            vad: (lambda v=vad: [detect_speech(u.samples, SR, method=v) for u in utts])
            for vad in vads
        },
        args.repeats,
    )
    ref, t_ref = timed(lambda: reference(utts), args.repeats)
    timings = {"whole (ResemblyzerExtractor.embed)": t_whole}
    timings |= {f"vad_turns_{v} ({v} VAD + embed + template)": by_vad[v][1] for v in vads}
    timings |= {f"{v} VAD only": vad_only[v][1] for v in vads}
    timings["resemblyzer_reference (preprocess_wav + embed_utterance)"] = t_ref

    report = {
        "benchmark": "voice_librispeech",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "data": str(root),
        "utterances": len(utts),
        "audio_s": audio_s,
        "model_id": extractor.model_id,
        "vads": vads,
        "default_vad": Settings.model_fields["vad"].default,
        "variants": {
            "whole": verification(utts, whole),
            **{f"vad_turns_{v}": verification(utts, by_vad[v][0]) for v in vads},
            "resemblyzer_reference": verification(utts, ref),
        },
        "rtf": {
            name: {"best": min(t) / audio_s, "all": [x / audio_s for x in t]}
            for name, t in timings.items()
        },
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "machine": platform.machine(),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "voice_librispeech.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "voice_librispeech.md").write_text(markdown(report))
    write_pair_scores(
        RESULTS / "voice_librispeech_scores.tsv",
        utts,
        {"whole": whole, **{f"vad_turns_{v}": by_vad[v][0] for v in vads}, "reference": ref},
    )
    print(markdown(report))


if __name__ == "__main__":
    main()
