"""AdaFace IR-101 throughput with seeded weights: CPU (batch 32, 2 threads) or CUDA (bf16).

Speed does not depend on the weights' values, so a seeded IR-101 stands in for the release.
The run goes through `AdaFaceEmbedder._run`, the code the face actor runs: on CUDA the network
is in channels_last and its convolutions under bf16 autocast, as `AdaFaceEmbedder.prepare`
sets it up. Flip test-time augmentation doubles the work per face; the headline is without
it (`--flip-tta` measures with it).

    .venv/bin/python benchmarks/adaface_throughput.py                       # CPU, batch 32
    .venv/bin/python benchmarks/adaface_throughput.py --device cuda --batch 256

On CUDA it reports the achieved model FLOP rate as a fraction of the card's dense bf16 peak
(IR-101 ~ 24.2 GFLOPs per 112x112 face; the script counts its own figure too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from biofuse.modalities.face.adaface import (  # noqa: E402
    CHIP_SIZE,
    AdaFaceEmbedder,
    build_ir,
    convert_checkpoint,
)

from biofuse.registry import Registry  # noqa: E402

ISSUE_GFLOPS_PER_FACE = 24.2
# Dense bf16 tensor-core peaks (no sparsity), from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L40S": 362.05, "L4": 121.0}


def count_gflops(depth: int) -> float:
    """2 x multiply-adds of every convolution and linear layer for one 112x112 face."""
    net = build_ir(depth)
    macs = 0

    def conv_hook(module: torch.nn.Conv2d, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal macs
        k = module.kernel_size[0] * module.kernel_size[1]
        macs += out.shape[2] * out.shape[3] * module.out_channels * module.in_channels * k

    def linear_hook(module: torch.nn.Linear, _inp: tuple, _out: torch.Tensor) -> None:
        nonlocal macs
        macs += module.in_features * module.out_features

    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, torch.nn.Linear):
            m.register_forward_hook(linear_hook)
    with torch.no_grad():
        net(torch.zeros(1, 3, CHIP_SIZE, CHIP_SIZE))
    return 2 * macs / 1e9


def seeded_embedder(depth: int, folder: Path, flip_tta: bool, batch: int) -> AdaFaceEmbedder:
    """A seeded IR-`depth` installed through the registry, as a user's checkpoint would be."""
    torch.manual_seed(0)
    state = {f"model.{k}": v for k, v in build_ir(depth).state_dict().items()}
    ckpt = folder / f"adaface_ir{depth}_seeded.ckpt"
    torch.save({"state_dict": state}, ckpt)
    name = f"adaface-ir{depth}"
    converted = convert_checkpoint(ckpt, folder / f"{name}.safetensors", depth)
    resolved = Registry(folder / "models").add(name, converted, training_set="seeded")
    return AdaFaceEmbedder(resolved, depth, batch_size=batch, flip_tta=flip_tta)


def peak_tflops(device_name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in BF16_PEAK_TFLOPS.items():
        if key in device_name:
            return value
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--depth", type=int, default=101)
    parser.add_argument("--batch", type=int, default=None, help="32 on CPU, 256 on CUDA")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--batches", type=int, default=None, help="timed batches")
    parser.add_argument("--flip-tta", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="card's bf16 peak")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)
    cuda = args.device == "cuda"
    batch = args.batch or (256 if cuda else 32)
    timed = args.batches or (50 if cuda else 3)
    torch.set_num_threads(args.threads)
    if cuda:
        torch.backends.cudnn.benchmark = True

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        embedder = seeded_embedder(args.depth, Path(tmp), args.flip_tta, batch)
        embedder.prepare(args.device)
    rng = np.random.default_rng(0)
    chips = torch.from_numpy(rng.integers(0, 256, (batch, CHIP_SIZE, CHIP_SIZE, 3), np.uint8))
    x = next(embedder._batches(chips.numpy()))  # on the device, BGR, scaled as in production

    def step() -> None:
        with torch.inference_mode():
            embedder._run(x)

    for _ in range(2 if cuda else 1):  # warm-up: allocator, cuDNN autotune, thread pools
        step()
    if cuda:
        torch.cuda.synchronize()
    t0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(timed):
        step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    cpu_seconds = time.process_time() - cpu0
    faces_per_s = batch * timed / seconds
    gflops = count_gflops(args.depth)
    views = 2 if args.flip_tta else 1
    achieved_tflops = faces_per_s * views * gflops / 1e3
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    peak = peak_tflops(device_name, args.peak_tflops) if cuda else None
    result = {
        "benchmark": f"AdaFace IR-{args.depth} seeded, AdaFaceEmbedder._run",
        "device": args.device,
        "device_name": device_name,
        "precision": "bf16 autocast, channels_last" if cuda else "float32",
        "batch": batch,
        "timed_batches": timed,
        "torch_threads": args.threads if not cuda else None,
        "flip_tta": args.flip_tta,
        "faces_per_s": faces_per_s,
        "ms_per_batch": 1000 * seconds / timed,
        # CPU time of this process: on a machine shared with other work, faces per
        # CPU-second x threads is what the model would do with the threads to itself
        "cpu_seconds": cpu_seconds,
        "faces_per_cpu_s": batch * timed / cpu_seconds,
        "gflops_per_face_counted": gflops,
        "gflops_per_face_issue": ISSUE_GFLOPS_PER_FACE,
        "achieved_tflops": achieved_tflops,
        "bf16_peak_tflops": peak,
        "fraction_of_peak": achieved_tflops / peak if peak else None,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
    }
    name = f"adaface_throughput_{args.device}"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def markdown(r: dict) -> str:
    frac = r["fraction_of_peak"]
    lines = [
        f"# {r['benchmark']}: {r['device']} throughput",
        "",
        "Written by `benchmarks/adaface_throughput.py`; do not edit by hand.",
        "",
        "| device | precision | batch | flip TTA | faces/s | ms/batch | model TFLOP/s | "
        "fraction of bf16 peak |",
        "|---|---|---|---|---|---|---|---|",
        f"| {r['device_name']} | {r['precision']} | {r['batch']} | {r['flip_tta']} | "
        f"{r['faces_per_s']:.1f} | {r['ms_per_batch']:.0f} | {r['achieved_tflops']:.3f} | "
        f"{'n/a' if frac is None else f'{100 * frac:.1f} %'} |",
        "",
        f"- GFLOPs per face: {r['gflops_per_face_counted']:.2f} counted (2 x conv+linear "
        f"multiply-adds), {r['gflops_per_face_issue']} in the issue.",
    ]
    if r["torch_threads"] is not None:
        lines.append(
            f"- torch threads {r['torch_threads']} on a shared {r['cpus']}-CPU machine; "
            f"1-min load average {r['loadavg_before'][0]:.2f} before, "
            f"{r['loadavg_after'][0]:.2f} after: other users' work slows this figure. "
            f"The process got {r['cpu_seconds']:.1f} CPU-s for {r['timed_batches']} batches: "
            f"{r['faces_per_cpu_s']:.2f} faces per CPU-second, i.e. about "
            f"{r['faces_per_cpu_s'] * r['torch_threads']:.1f} faces/s with "
            f"{r['torch_threads']} uncontended threads (if they scale linearly)."
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
