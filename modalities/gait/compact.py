"""A compact GaitBase-like model that 2 CPU cores can train, and the GaitBase training recipe.

It is our GaitBase graph (`gaitbase.GaitBase`: per-frame ResNet, set pooling by temporal max,
horizontal pooling into 16 parts, part-wise FCs, BNNeck classifier) with a slim config: a 3x3
stem then max-pool (64x44 -> 32x22), 16/32/64/64 channels, 64-d parts. That is about 1/12 of
GaitBase's compute per frame. Training follows OpenGait's GaitBase recipe: P x K batches of
fixed-length unordered frame sets, triplet loss (margin 0.2, all anchor-positive-negative
combinations per part) on the embeddings plus label-smoothed cross-entropy (scale 16) on the
BNNeck's cosine logits, SGD with momentum and step decay. Checkpoints are written in OpenGait's
`{'model': state_dict, ...}` layout, so `load_gaitbase(path, COMPACT_CONFIG)` reads them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from biofuse.modalities.gait.gaitbase import (
    GaitBase,
    GaitBaseConfig,
    ResNet9Config,
    SeparateBNNecksConfig,
    SeparateFCsConfig,
    base_sil_cutting,
)

COMPACT_CONFIG = GaitBaseConfig(
    backbone=ResNet9Config(channels=(16, 32, 64, 64), strides=(1, 2, 1, 1), maxpool=True),
    separate_fcs=SeparateFCsConfig(in_channels=64, out_channels=64, parts_num=16),
    separate_bnnecks=SeparateBNNecksConfig(class_num=74, in_channels=64, parts_num=16),
)


# -- losses (OpenGait's TripletLoss and CrossEntropyLoss, as used by GaitBase) -------------


def triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2
) -> torch.Tensor:
    """Batch-all triplet loss per part on `[n, c, p]`, averaged over the non-zero terms.

    Averaging over the violating triplets only (not all) keeps the gradient from vanishing
    once most triplets are satisfied, as OpenGait does.
    """
    x = embeddings.permute(2, 0, 1)  # [p, n, c]
    dist = torch.cdist(x, x)  # [p, n, n]
    same = labels[:, None] == labels[None, :]
    positive = same & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    # [p, anchor, positive, negative]: every combination, masked where it is not a triplet
    terms = F.relu(dist[:, :, :, None] - dist[:, :, None, :] + margin)
    valid = positive[:, :, None] & ~same[:, None, :]
    terms = terms * valid
    nonzero = (terms > 0).sum(dim=(1, 2, 3)).clamp(min=1)
    return (terms.sum(dim=(1, 2, 3)) / nonzero).mean()


def identity_loss(
    logits: torch.Tensor, labels: torch.Tensor, scale: float = 16.0, smoothing: float = 0.1
) -> torch.Tensor:
    """Cross-entropy on each part's cosine logits `[n, classes, p]`, scaled and smoothed."""
    targets = labels[:, None].expand(-1, logits.shape[2])
    return F.cross_entropy(scale * logits, targets, label_smoothing=smoothing)


# -- sampling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingSequences:
    """The training set kept bit-packed in memory (1/8 of the bytes): (T, 64, 8) per sequence."""

    packed: list[np.ndarray]
    subject_index: np.ndarray  # (n,) class of each sequence, 0..classes-1

    @property
    def classes(self) -> int:
        return int(self.subject_index.max()) + 1


@dataclass(frozen=True)
class Recipe:
    """Training hyper-parameters; the defaults are a CPU budget, `GAITBASE_RECIPE` the GPU one."""

    subjects_per_batch: int = 8
    sequences_per_subject: int = 4
    frames_per_sequence: int = 8
    iterations: int = 3000
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, ...] = (0.6, 0.85)  # fractions of training; lr x0.1 at each
    triplet_margin: float = 0.2
    seed: int = 0


# OpenGait's gaitbase_da_casiab.yaml: batch [8, 16], 30 frames, 60k iterations, SGD 0.1,
# milestones 20k/40k/50k (its data augmentation is not reproduced here).
GAITBASE_RECIPE = Recipe(
    sequences_per_subject=16,
    frames_per_sequence=30,
    iterations=60000,
    milestones=(1 / 3, 2 / 3, 5 / 6),
)


def sample_batch(
    data: TrainingSequences, recipe: Recipe, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """P subjects x K sequences x F unordered frames -> `[P*K, F, 64, 44]` and labels.

    Short sequences are sampled with replacement (CASIA-B has sequences of 1 frame).
    """
    by_subject = [np.flatnonzero(data.subject_index == c) for c in range(data.classes)]
    subjects = rng.choice(data.classes, recipe.subjects_per_batch, replace=False)
    clips, labels = [], []
    for subject in subjects:
        pool = by_subject[subject]
        chosen = rng.choice(
            pool, recipe.sequences_per_subject, replace=len(pool) < recipe.sequences_per_subject
        )
        for index in chosen:
            packed = data.packed[index]
            frames = rng.choice(
                len(packed),
                recipe.frames_per_sequence,
                replace=len(packed) < recipe.frames_per_sequence,
            )
            clips.append(np.unpackbits(packed[frames], axis=-1) * np.uint8(255))
            labels.append(subject)
    sils = torch.from_numpy(base_sil_cutting(np.stack(clips)))
    return sils, torch.as_tensor(np.asarray(labels), dtype=torch.long)


def train(
    model: GaitBase,
    data: TrainingSequences,
    recipe: Recipe,
    max_seconds: float | None = None,
    device: str = "cpu",
    log: Callable[[dict], None] | None = None,
    log_every: int = 50,
) -> dict:
    """Train in place until `recipe.iterations` or `max_seconds`, whichever comes first.

    The learning-rate steps are placed at fractions of whichever budget binds, so a
    time-capped run still anneals. Returns the run's summary (iterations, seconds, last loss).
    """
    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    model.to(device).train()
    optimizer = torch.optim.SGD(
        model.parameters(), lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
    )
    start = time.perf_counter()
    iteration, losses = 0, {"triplet": float("nan"), "ce": float("nan")}
    while iteration < recipe.iterations:
        elapsed = time.perf_counter() - start
        if max_seconds is not None and elapsed >= max_seconds:
            break
        progress = iteration / recipe.iterations
        if max_seconds is not None:
            progress = max(progress, elapsed / max_seconds)
        lr = recipe.lr * 0.1 ** sum(progress >= m for m in recipe.milestones)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sils, labels = sample_batch(data, recipe, rng)
        sils, labels = sils.to(device), labels.to(device)
        embeddings = model(sils)
        _, logits = model.BNNecks(embeddings)
        triplet = triplet_loss(embeddings, labels, recipe.triplet_margin)
        ce = identity_loss(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        (triplet + ce).backward()
        optimizer.step()
        iteration += 1
        losses = {"triplet": triplet.item(), "ce": ce.item()}
        if log is not None and (iteration % log_every == 0 or iteration == 1):
            log(
                {"iteration": iteration, "seconds": round(time.perf_counter() - start, 1), "lr": lr}
                | losses
            )
    model.eval()
    return {"iterations": iteration, "seconds": round(time.perf_counter() - start, 1)} | losses


def packed_training_set(sequences: Sequence[tuple[str, np.ndarray]]) -> TrainingSequences:
    """(subject, packed frames) pairs -> a training set with classes numbered by sorted subject."""
    subjects = sorted({s for s, _ in sequences})
    number = {s: i for i, s in enumerate(subjects)}
    kept = [(s, p) for s, p in sequences if len(p)]
    return TrainingSequences([p for _, p in kept], np.array([number[s] for s, _ in kept]))
