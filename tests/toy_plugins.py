"""A toy face model declared from the test folder alone (issue 13, item 3).

Importing this module registers `toy-face` with `biofuse.registry.register`; nothing outside
tests/ knows it. Listed in the `plugins` setting, it is imported wherever models are built.
Its "weights" are this file (package `toy_plugins`), so its model id changes with its code.
The embedding is deliberately simple (a seeded random projection of the aligned chip's 16x16
grey levels), but it is a real face model to the pipeline: it takes the ArcFace 112-px aligned
faces the pipeline prepares for its declared input, and its rows are scored by its declared
metric and calibrated by its declared (inline) calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from biofuse.modalities.base import Embeddings

from biofuse.registry import SPECS, ModelSpec, ResolvedModel, register

TOY_DIM = 32

TOY_FACE = ModelSpec(
    name="toy-face",
    modality="face",
    files={"code": "toy_plugins.py"},
    package="toy_plugins",
    licence="test only",
    provenance="tests/toy_plugins.py",
    description="toy face model: seeded projection of 16x16 grey aligned chips",
    builder="toy_plugins:build_toy_face",
    input="aligned-112",
    dim=TOY_DIM,
    metric="cosine",
    # an inline calibration (a user model fitted elsewhere declares its own map)
    calibration={"slope": 8.0, "offset": -4.0, "max_abs_llr": 3.0, "fitted_on": "toy: by hand"},
    same_person_cos=0.5,
)


class ToyFaceEmbedder:
    name = "toy-face"
    dim = TOY_DIM

    def __init__(self, resolved: ResolvedModel) -> None:
        self.model_id = resolved.model_id
        rng = np.random.default_rng(13)
        self.projection = rng.standard_normal((16 * 16, TOY_DIM)).astype(np.float32)

    def prepare(self, device: str = "cpu") -> None:
        pass

    def embed(self, items: Sequence[Any]) -> Embeddings:
        if not items:
            return Embeddings(
                np.zeros((0, TOY_DIM), np.float32), np.zeros(0, np.float32), [], self.model_id
            )
        rows = []
        for item in items:
            grey = np.asarray(item.chip_rgb_112, np.float32).mean(axis=2)  # (112, 112)
            small = grey[:112, :112].reshape(16, 7, 16, 7).mean(axis=(1, 3)).reshape(-1)
            small = (small - small.mean()) / (small.std() + 1e-6)
            rows.append(small @ self.projection)
        vectors = np.stack(rows).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        quality = np.array([item.quality for item in items], np.float32)
        return Embeddings(vectors, quality, [item.key for item in items], self.model_id)


def build_toy_face(resolved: ResolvedModel, settings: Any) -> ToyFaceEmbedder:
    return ToyFaceEmbedder(resolved)


if TOY_FACE.name not in SPECS:
    register(TOY_FACE)
