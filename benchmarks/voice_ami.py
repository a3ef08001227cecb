"""Voice on AMI meeting excerpts: diarization error rate, cross-recording speaker verification,
and the real-time factor of the whole voice path on CPU.

Data: `voice-dev/ami-excerpts` (13 excerpts x 30 s, 2-4 speakers each, RTTM + UEM). Model:
Resemblyzer GE2E, the only speaker encoder with weights here (ECAPA needs the user's release
folder, which this machine does not have).

- DER (pyannote.metrics, UEM 0-30 s, pooled over the recordings) for each speech detector
  (webrtc, energy, silero, and oracle speech from the RTTM), clustering (agglomerative with a
  threshold, spectral with eigengap count, agglomerative with the oracle speaker count), collar
  0.25 s and 0 s, overlapped speech scored or skipped. The agglomerative threshold is swept;
  the best one on the 10 `trn` excerpts (collar 0.25 s, overlap scored) is reported for each
  speech detector, and every configuration also on the held-out `dev`/`tst` excerpts.
- Speaker verification: every RTTM turn of at least 1 s is embedded; a trial is a pair of turns
  from different excerpts (AMI participant ids are global, so the same id in two excerpts is the
  same person); score = cosine; EER from biofuse.fusion.metrics.
- RTF: decode (PyAV) + VAD + window embeddings + clustering + turn embeddings, per recording,
  compute seconds / audio seconds, best of `--repeats`, for each of `RTF_VADS`; the detectors
  take turns within each repeat (order alternating), so the machine's load falls on all alike.

    nice -n 10 .venv/bin/python benchmarks/voice_ami.py [--threads 1] [--repeats 3]

Writes benchmarks/results/voice_ami.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.fusion.metrics import eer  # noqa: E402
from biofuse.modalities.base import Embeddings  # noqa: E402
from biofuse.modalities.voice import AudioSegment, ResemblyzerExtractor, SpeechTurn  # noqa: E402
from biofuse.modalities.voice.diarize import (  # noqa: E402
    DEFAULT_THRESHOLD,
    MIN_REGION_S,
    Diarization,
    DiarizationParams,
    diarize,
)
from biofuse.modalities.voice.vad import detect_speech  # noqa: E402

from biofuse import media  # noqa: E402
from biofuse.config import Settings, shared_data_dir  # noqa: E402
from biofuse.registry import Registry  # noqa: E402

SR = 16000
RESULTS = REPO / "benchmarks" / "results"
THRESHOLDS = (0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6)
FOLD_WINDOWS = (1, 2, 3, 4)  # min_speaker_windows values compared at the default threshold
SADS = ("webrtc", "energy", "silero", "oracle")
RTF_VADS = ("webrtc", "silero")  # the default and its contender
DEFAULT_VAD = Settings.model_fields["vad"].default
README_BASELINE = {"webrtc, threshold 0.227": 94.7, "oracle speech + oracle count": 34.3}


@dataclass
class Recording:
    name: str
    samples: np.ndarray
    reference: object  # pyannote.core.Annotation
    uem: object  # pyannote.core.Timeline
    turns: list[tuple[float, float, str]]

    @property
    def split(self) -> str:
        return self.name[:3]


def load(root: Path) -> list[Recording]:
    from pyannote.core import Annotation, Segment, Timeline

    out = []
    for wav in sorted(root.glob("*.wav")):
        name = wav.stem
        turns = []
        reference = Annotation(uri=name)
        for line in (root / f"{name}.rttm").read_text().splitlines():
            parts = line.split()
            start, duration, speaker = float(parts[3]), float(parts[4]), parts[7]
            turns.append((start, start + duration, speaker))
            reference[Segment(start, start + duration), len(turns)] = speaker
        uem = Timeline(
            [Segment(float(p[2]), float(p[3])) for p in _rows(root / f"{name}.uem")], uri=name
        )
        out.append(Recording(name, media.read_audio(wav), reference, uem, turns))
    return out


def _rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


class CachedEmbed:
    """The extractor behind a per-recording cache: the sweep embeds each window once."""

    def __init__(self, extractor: ResemblyzerExtractor) -> None:
        self.extractor = extractor
        self.cache: dict[str, tuple[np.ndarray, float] | None] = {}

    def __call__(self, items: list[AudioSegment]) -> Embeddings:
        todo = [it for it in items if it.key not in self.cache]
        if todo:
            rows = self.extractor.embed(todo)
            got = {k: (v, float(q)) for k, v, q in zip(rows.keys, rows.vectors, rows.quality)}
            for it in todo:
                self.cache[it.key] = got.get(it.key)
        hits = [(it.key, self.cache[it.key]) for it in items if self.cache[it.key] is not None]
        if not hits:
            return Embeddings.empty(self.extractor.dim, self.extractor.model_id)
        return Embeddings(
            np.stack([h[1][0] for h in hits]),
            np.array([h[1][1] for h in hits], np.float32),
            [h[0] for h in hits],
            self.extractor.model_id,
        )


def speech_regions(rec: Recording, sad: str) -> list[SpeechTurn]:
    if sad == "oracle":
        support = rec.reference.get_timeline().support()
        return [SpeechTurn(s.start, s.end) for s in support]
    return detect_speech(rec.samples, method=sad, min_turn_s=MIN_REGION_S, max_turn_s=0)


def hypothesis(rec: Recording, result: Diarization) -> object:
    from pyannote.core import Annotation, Segment

    hyp = Annotation(uri=rec.name)
    for i, seg in enumerate(result.segments):
        hyp[Segment(seg.start, seg.end), i] = seg.speaker
    return hyp


CONDITIONS = ((0.25, False), (0.25, True), (0.0, False), (0.0, True))


def score(recs: list[Recording], hyps: dict[str, object], conditions: tuple = CONDITIONS) -> dict:
    """Pooled DER (percent) and its parts for each (collar, skip overlap) condition."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    out = {}
    for collar, skip in conditions:
        metric = DiarizationErrorRate(collar=collar, skip_overlap=skip)
        for rec in recs:
            metric(rec.reference, hyps[rec.name], uem=rec.uem)
        parts = metric[:]
        out[f"collar{collar}_{'nooverlap' if skip else 'overlap'}"] = {
            "der": round(100 * abs(metric), 2),
            "confusion_s": round(parts["confusion"], 1),
            "missed_s": round(parts["missed detection"], 1),
            "false_alarm_s": round(parts["false alarm"], 1),
            "reference_s": round(parts["total"], 1),
        }
    return out


def run_config(
    recs: list[Recording],
    embeds: dict[str, CachedEmbed],
    regions: dict[tuple[str, str], list[SpeechTurn]],
    sad: str,
    params: DiarizationParams,
    oracle_count: bool = False,
) -> tuple[dict[str, object], dict[str, int]]:
    hyps, counts = {}, {}
    for rec in recs:
        n = len({t[2] for t in rec.turns}) if oracle_count else None
        result = diarize(rec.samples, regions[(rec.name, sad)], embeds[rec.name], params, n)
        hyps[rec.name] = hypothesis(rec, result)
        counts[rec.name] = len(result.speakers)
    return hyps, counts


def diarization_tables(recs: list[Recording], extractor: ResemblyzerExtractor) -> dict:
    embeds = {rec.name: CachedEmbed(extractor) for rec in recs}
    regions = {(rec.name, sad): speech_regions(rec, sad) for rec in recs for sad in SADS}
    train = [r for r in recs if r.split == "trn"]
    held_out = [r for r in recs if r.split != "trn"]
    sweep: dict[str, dict[str, float]] = {}
    for sad in SADS:
        sweep[sad] = {}
        for t in THRESHOLDS:
            hyps, _ = run_config(recs, embeds, regions, sad, DiarizationParams(threshold=t))
            main = CONDITIONS[:1]
            sweep[sad][str(t)] = {
                "all": score(recs, hyps, main)["collar0.25_overlap"]["der"],
                "trn": score(train, hyps, main)["collar0.25_overlap"]["der"],
            }
            print(f"sweep {sad} {t}: {sweep[sad][str(t)]}", flush=True)
    tuned = {sad: min(THRESHOLDS, key=lambda t: sweep[sad][str(t)]["trn"]) for sad in SADS}
    folding: dict[str, dict[str, dict[str, float]]] = {}
    for sad in ("webrtc", "silero", "oracle"):
        folding[sad] = {}
        for m in FOLD_WINDOWS:
            params = DiarizationParams(threshold=DEFAULT_THRESHOLD, min_speaker_windows=m)
            hyps, counts = run_config(recs, embeds, regions, sad, params)
            main = CONDITIONS[:1]
            folding[sad][str(m)] = {
                "all": score(recs, hyps, main)["collar0.25_overlap"]["der"],
                "trn": score(train, hyps, main)["collar0.25_overlap"]["der"],
                "speakers": sum(counts.values()),
            }
    configs = {
        f"agglomerative, threshold {DEFAULT_THRESHOLD} (default)": (
            DiarizationParams(threshold=DEFAULT_THRESHOLD),
            False,
        ),
        "spectral, eigengap count": (DiarizationParams(method="spectral"), False),
        "agglomerative, oracle count": (DiarizationParams(), True),
    }
    table = []
    for sad in SADS:
        for label, (params, oracle_count) in configs.items():
            hyps, counts = run_config(recs, embeds, regions, sad, params, oracle_count)
            print(f"table {sad} {label}", flush=True)
            table.append(
                {
                    "sad": sad,
                    "clustering": label,
                    "all": score(recs, hyps),
                    "held_out_dev_tst": score(held_out, hyps, CONDITIONS[:1])["collar0.25_overlap"][
                        "der"
                    ],
                    "speakers_found": counts,
                }
            )
    speech_found = {
        sad: round(sum(t.duration for r in recs for t in regions[(r.name, sad)]), 1) for sad in SADS
    }
    return {
        "sweep_collar0.25_overlap": sweep,
        "threshold_tuned_on_trn": tuned,
        "min_speaker_windows_sweep": folding,
        "default_threshold": DEFAULT_THRESHOLD,
        "table": table,
        "speech_found_s": speech_found,
        "true_speakers": {r.name: len({t[2] for t in r.turns}) for r in recs},
    }


def verification(recs: list[Recording], extractor: ResemblyzerExtractor, min_s: float) -> dict:
    segments, speakers, sources = [], [], []
    for rec in recs:
        for start, end, speaker in rec.turns:
            if end - start < min_s:
                continue
            a, b = round(start * SR), round(end * SR)
            segments.append(AudioSegment(f"{rec.name}@{start:.2f}", rec.samples[a:b]))
            speakers.append(speaker)
            sources.append(rec.name)
    rows = extractor.embed(segments)
    index = {s.key: i for i, s in enumerate(segments)}
    kept = [index[k] for k in rows.keys]
    genuine, impostor = [], []
    for (i, vi), (j, vj) in combinations(list(zip(kept, rows.vectors)), 2):
        if sources[i] == sources[j]:
            continue
        (genuine if speakers[i] == speakers[j] else impostor).append(float(vi @ vj))
    cross_speakers = {
        s for s in set(speakers) if len({src for sp, src in zip(speakers, sources) if sp == s}) > 1
    }
    return {
        "turns": len(kept),
        "min_turn_s": min_s,
        "speakers": len(set(speakers)),
        "speakers_in_several_excerpts": len(cross_speakers),
        "target_trials": len(genuine),
        "nontarget_trials": len(impostor),
        "eer_percent": round(100 * eer(np.array(genuine), np.array(impostor)), 2),
        "mean_cosine_target": round(float(np.mean(genuine)), 3),
        "mean_cosine_nontarget": round(float(np.mean(impostor)), 3),
    }


def real_time_factor(root: Path, extractor: ResemblyzerExtractor, repeats: int) -> dict:
    """The pipeline's voice path per recording: decode, VAD, diarize, embed the speaker turns.

    One entry per detector in `RTF_VADS`, timed in turns within each repeat.
    """
    from biofuse.modalities.voice import turn_segments

    wavs = sorted(root.glob("*.wav"))
    audio_s = sum(len(media.read_audio(wav)) / SR for wav in wavs)
    for vad in RTF_VADS:  # load each detector's model before the clock runs
        detect_speech(np.zeros(SR, np.float32), method=vad)
    runs: dict[str, list[float]] = {vad: [] for vad in RTF_VADS}
    for r in range(repeats):
        for vad in RTF_VADS if r % 2 == 0 else RTF_VADS[::-1]:
            started = time.perf_counter()
            for wav in wavs:
                samples = media.read_audio(wav)
                regions = detect_speech(samples, method=vad, min_turn_s=MIN_REGION_S, max_turn_s=0)
                result = diarize(samples, regions, extractor.embed)
                turns = [t for t, _ in result.turns()]
                extractor.embed(turn_segments(samples, turns, wav.stem))
            runs[vad].append((time.perf_counter() - started) / audio_s)
    return {
        "audio_s": round(audio_s, 1),
        "by_vad": {
            vad: {"rtf_best": round(min(r), 4), "rtf_runs": [round(x, 4) for x in r]}
            for vad, r in runs.items()
        },
    }


def markdown(report: dict) -> str:
    d = report["diarization"]
    env = report["environment"]
    lines = [
        "# Voice on AMI excerpts: diarization, cross-recording verification, RTF",
        "",
        f"Written by `benchmarks/voice_ami.py` on {report['written']}. Model "
        f"`{report['model']}` (ECAPA: no weights on this machine, not measured). 13 excerpts x "
        "30 s; DER pooled over recordings with pyannote.metrics, UEM 0-30 s.",
        "",
        "## Diarization error rate (%)",
        "",
        "| speech | clustering | collar 0.25, overlap | collar 0.25, no overlap | collar 0, "
        "overlap | collar 0, no overlap | held-out dev+tst (0.25, overlap) | conf / miss / FA s "
        "(0.25, overlap) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in d["table"]:
        a = row["all"]
        main = a["collar0.25_overlap"]
        lines.append(
            f"| {row['sad']} | {row['clustering']} | **{main['der']}** | "
            f"{a['collar0.25_nooverlap']['der']} | {a['collar0.0_overlap']['der']} | "
            f"{a['collar0.0_nooverlap']['der']} | {row['held_out_dev_tst']} | "
            f"{main['confusion_s']} / {main['missed_s']} / {main['false_alarm_s']} |"
        )
    lines += [
        "",
        "Data README baseline (collar 0.25, overlap scored, its own windowing): "
        + "; ".join(f"{k}: {v} %" for k, v in README_BASELINE.items())
        + ".",
        "",
        f"Speech found (s, 390 s of audio; reference union 255.4 s): {d['speech_found_s']}.",
        "",
        "### Threshold sweep (agglomerative, collar 0.25, overlap scored): all 13 / trn only",
        "",
        "| speech | " + " | ".join(str(t) for t in THRESHOLDS) + " |",
        "| --- |" + " --- |" * len(THRESHOLDS),
    ]
    for sad, row in d["sweep_collar0.25_overlap"].items():
        cells = [f"{row[str(t)]['all']} / {row[str(t)]['trn']}" for t in THRESHOLDS]
        lines.append(f"| {sad} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Best threshold on the trn excerpts: "
        + ", ".join(f"{sad} speech {t}" for sad, t in d["threshold_tuned_on_trn"].items())
        + f"; default in modalities/voice/diarize.py: {d['default_threshold']}.",
        "",
        f"### Folding small speakers (threshold {d['default_threshold']}): DER all / trn, "
        f"speakers found (true: {sum(d['true_speakers'].values())})",
        "",
        "| speech | " + " | ".join(f"min {m} windows" for m in FOLD_WINDOWS) + " |",
        "| --- |" + " --- |" * len(FOLD_WINDOWS),
    ]
    for sad, row in d["min_speaker_windows_sweep"].items():
        cells = [
            f"{row[str(m)]['all']} / {row[str(m)]['trn']}, {row[str(m)]['speakers']}"
            for m in FOLD_WINDOWS
        ]
        lines.append(f"| {sad} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Speaker verification, cross-recording pairs of RTTM turns",
        "",
    ]
    v = report["verification"]
    lines += [
        f"{v['turns']} turns of >= {v['min_turn_s']} s, {v['speakers']} speakers "
        f"({v['speakers_in_several_excerpts']} appear in several excerpts); "
        f"{v['target_trials']} target / {v['nontarget_trials']} non-target trials: "
        f"**EER {v['eer_percent']} %** (mean cosine target {v['mean_cosine_target']}, "
        f"non-target {v['mean_cosine_nontarget']}). Turns include overlapped speech.",
        "",
        "## Real-time factor of the voice path (CPU)",
        "",
        f"Decode + VAD + diarize + turn embeddings on {report['rtf']['audio_s']} s, the "
        "detectors timed in turns in one run (compute seconds / audio seconds, best of repeats):",
        "",
        "| VAD | RTF | runs |",
        "| --- | --- | --- |",
        *(
            f"| {vad}{' (default)' if vad == report['default_vad'] else ''} | "
            f"**{r['rtf_best']}** | {r['rtf_runs']} |"
            for vad, r in report["rtf"]["by_vad"].items()
        ),
        "",
        f"Default speech detector (`biofuse.config.Settings.vad`): `{report['default_vad']}`.",
        "",
        f"Environment: Python {env['python']}, torch {env['torch']} ({env['threads']} threads), "
        f"{env['cpus']} CPUs (shared), load average before the run {env['load_before']}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    root = shared_data_dir() / "voice-dev" / "ami-excerpts"
    if not root.is_dir():
        raise SystemExit(f"AMI excerpts not found at {root}")
    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as models:
        extractor = ResemblyzerExtractor(Registry(Path(models)).resolve("resemblyzer-ge2e"))
        extractor.prepare("cpu")
        recs = load(root)
        report = {
            "written": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "model": extractor.model_id,
            "default_vad": DEFAULT_VAD,
            "diarization": diarization_tables(recs, extractor),
            "verification": verification(recs, extractor, min_s=1.0),
            "rtf": real_time_factor(root, extractor, args.repeats),
            "environment": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": args.threads,
                "cpus": os.cpu_count(),
                "load_before": load_before,
            },
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "voice_ami.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "voice_ami.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
