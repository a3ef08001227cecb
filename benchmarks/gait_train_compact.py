"""Train the compact GaitBase-like gait model on CASIA-B subjects 001-074 (CPU budget or GPU).

CPU (what was run here: 2 shared cores, capped at 25 minutes):

    nice -n 15 .venv/bin/python benchmarks/gait_train_compact.py --max-minutes 25

Full GaitBase recipe on a GPU (OpenGait's batch 8x16, 30 frames, 60k iterations, SGD 0.1 with
steps at 20k/40k/50k; the official channel widths with `--arch gaitbase`):

    .venv/bin/python benchmarks/gait_train_compact.py --recipe gaitbase --arch gaitbase \
        --device cuda --out ~/.biofuse/models/gaitbase-casiab/gaitbase-casiab.pt

Writes an OpenGait-layout checkpoint ({'model': state_dict, 'iteration': n}) where the registry
finds the packaged `gait-compact-casiab` (modalities/gait/weights/gait-compact-casiab.pt), the
training report JSON beside it and a copy of the report in
benchmarks/results/gait_compact_training.json. Evaluate with benchmarks/gait_casiab_protocol.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.modalities.gait.casiab import TRAIN_SUBJECTS, data_sha256, read_subject  # noqa: E402
from biofuse.modalities.gait.compact import (  # noqa: E402
    COMPACT_CONFIG,
    GAITBASE_RECIPE,
    Recipe,
    packed_training_set,
    train,
)
from biofuse.modalities.gait.gaitbase import GAITBASE_CASIAB, GaitBase  # noqa: E402

from biofuse.config import shared_data_dir  # noqa: E402

ARCHS = {"compact": COMPACT_CONFIG, "gaitbase": GAITBASE_CASIAB}
RECIPES = {"cpu": Recipe(), "gaitbase": GAITBASE_RECIPE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=shared_data_dir() / "casiab")
    parser.add_argument("--out", type=Path, help="default: where the registry looks")
    parser.add_argument("--arch", choices=sorted(ARCHS), default="compact")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="cpu")
    parser.add_argument("--iterations", type=int, help="override the recipe's iterations")
    parser.add_argument("--max-minutes", type=float, help="wall-clock cap for training")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--subjects", type=int, default=74, help="first N training subjects")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    if args.out is None:  # the packaged default's place (see its registry spec)
        args.out = REPO / "modalities" / "gait" / "weights" / "gait-compact-casiab.pt"
    recipe = RECIPES[args.recipe]
    if args.iterations:
        recipe = dataclasses.replace(recipe, iterations=args.iterations)
    subjects = TRAIN_SUBJECTS[: args.subjects]
    start = time.perf_counter()
    sequences = [
        (subject, packed)
        for subject in subjects
        for _, packed in sorted(read_subject(args.data, subject).items())
    ]
    data = packed_training_set(sequences)
    print(f"{len(data.packed)} sequences of {data.classes} subjects", flush=True)

    config = ARCHS[args.arch]
    model = GaitBase(config)
    log_path = args.out.with_suffix(".log.jsonl")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log_file:

        def log(row: dict) -> None:
            print(row, flush=True)
            log_file.write(json.dumps(row) + "\n")

        summary = train(
            model,
            data,
            recipe,
            max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
            device=args.device,
            log=log,
        )
    model.cpu()
    torch.save({"model": model.state_dict(), "iteration": summary["iterations"]}, args.out)
    report = {
        "model": args.out.stem,
        "arch": args.arch,
        "config": dataclasses.asdict(config),
        "recipe": dataclasses.asdict(recipe),
        "max_minutes": args.max_minutes,
        "data": "CASIA-B (../shared/data/casiab, bit-packed OpenGait pretreatment)",
        "data_sha256": data_sha256(args.data, subjects),
        "subjects": f"{subjects[0]}-{subjects[-1]}",
        "sequences": len(data.packed),
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": summary,
        "seconds_total": round(time.perf_counter() - start, 1),
        "weights_bytes": args.out.stat().st_size,
        "machine": f"{platform.machine()}, torch {torch.__version__}, {args.device}, "
        f"{args.threads} threads",
    }
    text = json.dumps(report, indent=2) + "\n"
    args.out.with_suffix(".json").write_text(text)
    if args.arch == "compact" and args.recipe == "cpu":
        (REPO / "benchmarks" / "results" / "gait_compact_training.json").write_text(text)
    print(json.dumps(report["training"]))


if __name__ == "__main__":
    main()
