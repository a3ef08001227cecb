"""Standard CASIA-B protocol for every installed gait model, with CPU throughput.

Test subjects 075-124 (never seen in training): gallery nm-01..04; probes NM (nm-05, nm-06),
BG (bg-01, bg-02), CL (cl-01, cl-02); for each probe view and each other gallery view, rank-1
of the nearest gallery sequence; the 10 cross-view figures are averaged per probe view, then
over the 11 probe views (OpenGait's `evaluate_indoor_dataset`). Models are loaded through the
registry as the pipeline loads them, and compared with their own metric: cosine for the GEI
model, the evaluator's part-averaged Euclidean distance for GaitBase-family models. Models whose
weights are not installed are listed as such.

    nice -n 10 .venv/bin/python benchmarks/gait_casiab_protocol.py [--deep-max-frames 30]

Throughput is tracks (sequences) per second through `Extractor.embed`, batches of one subject's
110 sequences, on the CPU threads given by --threads; GaitBase without installed weights is
timed with seeded weights on --speed-tracks sequences (speed does not depend on the weights).
Writes benchmarks/results/gait_casiab.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.modalities.gait.casiab import (  # noqa: E402
    TEST_SUBJECTS,
    VIEWS,
    ProtocolResult,
    SequenceLabel,
    cosine_similarity,
    iter_sequences,
    rank1_table,
)
from biofuse.modalities.gait.compact import COMPACT_CONFIG  # noqa: E402
from biofuse.modalities.gait.extractors import GaitBaseExtractor  # noqa: E402
from biofuse.modalities.gait.gaitbase import (  # noqa: E402
    GAITBASE_CASIAB,
    GaitBase,
    GaitBaseConfig,
    gait_distance,
)
from biofuse.modalities.gait.gei import GeiGaitExtractor  # noqa: E402
from biofuse.modalities.items import SilhouetteSequence  # noqa: E402

from biofuse.config import load_settings, shared_data_dir  # noqa: E402
from biofuse.errors import ModelMissingError  # noqa: E402
from biofuse.registry import Registry  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
README_GEI_BASELINE = {"NM": 64.4, "BG": 47.4, "CL": 32.3}  # ../shared/data/casiab/README.md
GAITBASE_PUBLISHED = {"NM": 97.6, "BG": 94.0, "CL": 77.4}  # OpenGait, gaitbase_da_casiab


def euclidean_similarity(shape: tuple[int, int]) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Negated `gait_distance` on rows reshaped to [n, c, p] (larger = more alike)."""

    def similarity(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
        return -gait_distance(probe.reshape(-1, *shape), gallery.reshape(-1, *shape))

    return similarity


def build_extractors(registry: Registry, deep_max_frames: int | None) -> tuple[dict, dict]:
    """(name -> (extractor, similarity)) for installed models, (name -> reason) for the rest."""
    found, missing = {}, {}
    candidates = {
        "gei-pca-lda-casiab": lambda r: (GeiGaitExtractor(r), cosine_similarity),
        "gait-compact-casiab": lambda r: (
            GaitBaseExtractor(r, COMPACT_CONFIG, max_frames_per_sequence=deep_max_frames),
            euclidean_similarity(COMPACT_CONFIG.embedding_shape),
        ),
        "gaitbase-casiab": lambda r: (
            GaitBaseExtractor(r, GAITBASE_CASIAB, max_frames_per_sequence=deep_max_frames),
            euclidean_similarity(GAITBASE_CASIAB.embedding_shape),
        ),
    }
    for name, make in candidates.items():
        try:
            extractor, similarity = make(registry.resolve(name))
            extractor.prepare("cpu")
            found[name] = (extractor, similarity)
        except ModelMissingError as exc:
            missing[name] = str(exc).split(". ")[0]
    return found, missing


def evaluate(
    extractors: dict, root: Path, subjects: tuple[str, ...]
) -> tuple[dict[str, ProtocolResult], dict[str, dict]]:
    """Embed every test sequence with every model (one subject per batch), then score."""
    labels: list[SequenceLabel] = []
    rows: dict[str, list[np.ndarray]] = {name: [] for name in extractors}
    seconds = dict.fromkeys(extractors, 0.0)
    frames = 0
    for subject in subjects:
        batch = list(iter_sequences(root, [subject]))
        items = [seq for _, seq in batch]
        frames += sum(len(seq.frames) for seq in items)
        for name, (extractor, _) in extractors.items():
            start = time.perf_counter()
            embeddings = extractor.embed(items)
            seconds[name] += time.perf_counter() - start
            by_key = dict(zip(embeddings.keys, embeddings.vectors))
            # a sequence without foreground would have no row: none exist in CASIA-B's test set
            rows[name].append(np.stack([by_key[seq.key] for seq in items]))
        labels += [label for label, _ in batch]
        print(f"{subject}: {len(labels)} sequences", flush=True)
    results, speed = {}, {}
    for name, (extractor, similarity) in extractors.items():
        vectors = np.concatenate(rows[name])
        results[name] = rank1_table(vectors, labels, similarity)
        speed[name] = {
            "tracks_per_s": round(len(labels) / seconds[name], 1),
            "frames_per_s": round(frames / seconds[name], 1),
            "sequences": len(labels),
            "dim": extractor.dim,
            "model_id": extractor.model_id,
        }
    return results, speed


def seeded_speed(
    name: str, config: GaitBaseConfig, items: list[SilhouetteSequence], max_frames: int | None
) -> dict:
    """Tracks/s of a model whose weights are absent, with seeded weights (speed only)."""
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        path = Path(tmp) / "seeded.pt"
        torch.save({"model": GaitBase(config).state_dict()}, path)
        registry = Registry(Path(tmp) / "models")
        extractor = GaitBaseExtractor(
            registry.add(name, path), config, max_frames_per_sequence=max_frames
        )
        extractor.prepare("cpu")
        start = time.perf_counter()
        rows = extractor.embed(items)
        seconds = time.perf_counter() - start
    frames = sum(min(len(i.frames), max_frames or len(i.frames)) for i in items)
    return {
        "tracks_per_s": round(len(rows) / seconds, 2),
        "frames_per_s": round(frames / seconds, 1),
        "sequences": len(rows),
        "weights": "seeded (not installed): speed only, no accuracy",
    }


def markdown(report: dict) -> str:
    lines = [
        "# CASIA-B standard protocol (test subjects 075-124)",
        "",
        "Gallery nm-01..04; probes NM (nm-05/06), BG (bg-01/02), CL (cl-01/02); rank-1 % of "
        "the nearest gallery sequence per (probe view, gallery view), identical view "
        "excluded, averaged over the 11 probe views. Command: "
        f"`{report['command']}`.",
        "",
        "GaitBase-family models see at most "
        f"{report['deep_max_frames_per_sequence']} evenly spaced frames per sequence; the GEI "
        "model sees all. Throughput: " + report["machine"] + " (other jobs share the cores, "
        "so it varies with their load).",
        "",
        "| model | NM | BG | CL | identical view NM/BG/CL | tracks/s (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["models"].items():
        r, same, speed = row["rank1"], row["identical_view"], row["throughput"]
        lines.append(
            f"| {name} | {r['NM']:.1f} | {r['BG']:.1f} | {r['CL']:.1f} | "
            f"{same['NM']:.1f}/{same['BG']:.1f}/{same['CL']:.1f} | {speed['tracks_per_s']} |"
        )
    for name, ref in report["references"].items():
        lines.append(f"| {name} | {ref['NM']} | {ref['BG']} | {ref['CL']} | | |")
    for name, speed in report["seeded_speed"].items():
        lines.append(f"| {name} (seeded weights, speed only) | | | | | {speed['tracks_per_s']} |")
    if report["not_installed"]:
        lines += ["", "Not evaluated (weights not installed):", ""]
        lines += [f"- {k}: {v}" for k, v in report["not_installed"].items()]
    for name, row in report["models"].items():
        for condition, table in row["tables"].items():
            lines += [
                "",
                f"## {name}, {condition}: rank-1 % (rows: probe view, columns: gallery view)",
                "",
                "| probe \\ gallery | " + " | ".join(VIEWS) + " | mean (excl. same) |",
                "|---" * (len(VIEWS) + 2) + "|",
            ]
            per_view = row["per_probe_view"][condition]
            for view, cells, mean in zip(VIEWS, table, per_view):
                lines.append(
                    f"| {view} | "
                    + " | ".join(f"{c:.1f}" if c is not None else "-" for c in cells)
                    + f" | {mean:.1f} |"
                )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "casiab")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--deep-max-frames",
        type=int,
        default=30,
        help="frames per sequence for GaitBase-family models (evenly spaced; 0 = all)",
    )
    parser.add_argument("--subjects", type=int, default=50, help="first N test subjects")
    parser.add_argument("--name", default="gait_casiab")
    parser.add_argument(
        "--speed-tracks", type=int, default=20, help="tracks timed for uninstalled GaitBase"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    registry = Registry(load_settings().models_dir)
    extractors, missing = build_extractors(registry, args.deep_max_frames or None)
    results, speed = evaluate(extractors, args.data, TEST_SUBJECTS[: args.subjects])
    sample = [seq for _, seq in iter_sequences(args.data, TEST_SUBJECTS[:1])][: args.speed_tracks]
    seeded = {
        name: seeded_speed(name, GAITBASE_CASIAB, sample, args.deep_max_frames or None)
        for name in ("gaitbase-casiab",)
        if name in missing
    }

    def table(x: np.ndarray) -> list[list[float | None]]:
        return [[None if np.isnan(v) else round(float(v), 2) for v in r] for r in x]

    report = {
        "command": "nice -n 10 .venv/bin/python benchmarks/gait_casiab_protocol.py "
        + " ".join(sys.argv[1:]),
        "protocol": "CASIA-B standard: test 075-124, gallery nm-01..04, probes NM/BG/CL, "
        "identical view excluded, rank-1 averaged over 11 probe views",
        "deep_max_frames_per_sequence": args.deep_max_frames or "all",
        "models": {
            name: {
                "rank1": {k: round(v, 2) for k, v in result.rank1.items()},
                "identical_view": {k: round(v, 2) for k, v in result.identical_view.items()},
                "per_probe_view": {
                    k: [round(float(v), 2) for v in vals]
                    for k, vals in result.per_probe_view.items()
                },
                "tables": {k: table(t) for k, t in result.tables.items()},
                "throughput": speed[name],
            }
            for name, result in results.items()
        },
        "references": {
            "GEI+PCA+LDA baseline (casiab README)": README_GEI_BASELINE,
            "GaitBase published (OpenGait)": GAITBASE_PUBLISHED,
        },
        "not_installed": missing,
        "seeded_speed": seeded,
        "machine": f"{platform.machine()}, {args.threads} torch threads (2 shared cores), "
        f"torch {torch.__version__}",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(report))
    for name, row in report["models"].items():
        print(name, row["rank1"], row["throughput"]["tracks_per_s"], "tracks/s")


if __name__ == "__main__":
    main()
