"""CPU cost of the seed systems' models (issue 15): parameters and ms per item, seeded weights.

    PYTHONPATH=. python benchmarks/seed_models_cpu.py [--threads 2] [--repeats 5]

Items: DeepGaitV2 (CASIA-B, p3d) one 30-frame 64x44 silhouette sequence; KP-RPE ViT-base
one aligned 112x112 face with its five landmarks. Weights are random (speed does not depend on
them). Writes benchmarks/results/seed_models_cpu.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def timed(fn, repeats: int) -> float:
    with torch.no_grad():
        fn()  # warm-up
        best = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best.append(time.perf_counter() - start)
    return 1000 * sorted(best)[len(best) // 2]


def models() -> dict[str, tuple[torch.nn.Module, object, int]]:
    out: dict[str, tuple[torch.nn.Module, object, int]] = {}
    from biofuse.modalities.gait.deepgaitv2 import build_deepgaitv2

    gait = build_deepgaitv2()
    sils = (torch.rand(1, 30, 64, 44) > 0.5).float()
    out["deepgaitv2-casiab"] = (gait, lambda: gait(sils), 1)
    try:
        from biofuse.modalities.face.kprpe import build_kprpe
    except ImportError:
        return out
    face = build_kprpe()
    images = torch.randn(8, 3, 112, 112)
    marks = torch.rand(8, 5, 2)
    out["kprpe-vit-base"] = (face, lambda: face(images, marks), 8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = {}
    for name, (net, call, batch) in models().items():
        params = sum(p.numel() for p in net.parameters())
        inference = sum(p.numel() for k, p in net.named_parameters() if not k.startswith("BNNecks"))
        ms = timed(call, args.repeats) / batch
        rows[name] = {
            "params": params,
            "params_inference": inference,
            "cpu_ms_per_item": ms,
            "batch": batch,
        }
        print(name, rows[name])
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "repeats": args.repeats,
        "statistic": "median",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "seed_models_cpu.json").write_text(
        json.dumps({"meta": meta, "models": rows}, indent=2) + "\n"
    )
    lines = [
        "# Seed models, CPU cost (seeded weights)",
        "",
        f"torch {meta['torch']}, {args.threads} threads, median of {args.repeats}; "
        "`PYTHONPATH=. python benchmarks/seed_models_cpu.py`",
        "",
        "| model | params | params at inference | CPU ms per item (batch) |",
        "|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['params']:,} | {r['params_inference']:,} | "
            f"{r['cpu_ms_per_item']:.1f} ({r['batch']}) |"
        )
    (RESULTS / "seed_models_cpu.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
