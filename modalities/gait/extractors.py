"""GaitBase-family extractor: silhouette sequences -> flattened part embeddings.

Serves the official OpenGait GaitBase (`gaitbase-casiab`, user-provided .pt) and our compact
GaitBase-like model (`gait-compact-casiab`), which differ only in their `GaitBaseConfig`.

Metric: a row is the `[channels, parts]` embedding flattened channel-major, not normalised.
Compare rows as OpenGait's evaluator does, `gait_distance(rows.reshape(-1, c, p), ...)`: the
Euclidean distance per horizontal part, averaged over parts (smaller = more alike).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from biofuse.modalities.base import Embeddings
from biofuse.modalities.gait.gaitbase import (
    GAITBASE_CASIAB,
    GaitBase,
    GaitBaseConfig,
    base_sil_cutting,
    load_gaitbase,
)
from biofuse.modalities.gait.gei import sequence_quality, usable_frames
from biofuse.modalities.items import SilhouetteSequence

from biofuse.registry import ResolvedModel


class GaitBaseExtractor:
    """One row per sequence with foreground; all of a batch's frames go through one packed
    forward pass (`max_frames_per_call` bounds its memory), each sequence pooled on its own."""

    def __init__(
        self,
        model: ResolvedModel,
        config: GaitBaseConfig = GAITBASE_CASIAB,
        max_frames_per_call: int = 2048,
        max_frames_per_sequence: int | None = None,
        loader: Callable[[Path], torch.nn.Module] | None = None,
        packed: bool = True,
    ) -> None:
        self.model = model
        self.config = config
        self.name = model.spec.name
        channels, parts = config.embedding_shape
        self.embedding_shape = (channels, parts)
        self.dim = channels * parts
        self.max_frames_per_call = max_frames_per_call
        self.max_frames_per_sequence = max_frames_per_sequence
        # DeepGaitV2 shares this extractor: its own loader, and `packed=False` (its temporal
        # convolution would see the next sequence's frames in a packed batch).
        self._loader = loader or (lambda path: load_gaitbase(path, self.config))
        self.packed = packed
        self._net: GaitBase | torch.nn.Module | None = None
        self._device = "cpu"

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def prepare(self, device: str = "cpu") -> None:
        """Load the checkpoint once (weights-only, strict); later calls only move devices."""
        if self._net is None:
            self._net = self._loader(self.model.paths["weights"])
        if device != self._device:
            self._net.to(device)
            self._device = device

    def _capped(self, frames: np.ndarray) -> np.ndarray:
        cap = self.max_frames_per_sequence
        if cap is not None and len(frames) > cap:  # evenly spaced: spans the whole walk
            frames = frames[np.linspace(0, len(frames) - 1, cap).round().astype(int)]
        return frames

    def embed(self, items: Sequence[SilhouetteSequence]) -> Embeddings:
        self.prepare(self._device)
        assert self._net is not None
        kept = [(item, usable_frames(item)) for item in items]
        kept = [(item, frames) for item, frames in kept if len(frames)]
        if not kept:
            return Embeddings.empty(self.dim, self.model_id)
        rows: list[np.ndarray] = []
        chunk: list[np.ndarray] = []
        for _, usable in kept:
            frames = self._capped(usable)
            if chunk and sum(map(len, chunk)) + len(frames) > self.max_frames_per_call:
                rows.append(self._forward(chunk))
                chunk = []
            chunk.append(frames)
        rows.append(self._forward(chunk))
        quality = [sequence_quality(item, len(frames)) for item, frames in kept]
        return Embeddings(
            np.concatenate(rows),
            np.asarray(quality, np.float32),
            [item.key for item, _ in kept],
            self.model_id,
        )

    @torch.no_grad()
    def _forward(self, sequences: list[np.ndarray]) -> np.ndarray:
        assert self._net is not None
        if not self.packed and len(sequences) > 1:
            return np.concatenate([self._forward([s]) for s in sequences])
        packed = torch.from_numpy(base_sil_cutting(np.concatenate(sequences)))[None]
        embeddings = self._net(packed.to(self._device), [len(s) for s in sequences])
        return embeddings.reshape(len(sequences), -1).float().cpu().numpy()
