"""Build the configured models by name. Pure: used in Ray actors and in direct calls alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from biofuse.config import Settings
from biofuse.errors import ModelMissingError
from biofuse.registry import Registry, ResolvedModel
from modalities.base import Embeddings


def _resolve_supported(kind: str, name: str, supported: str, settings: Settings) -> ResolvedModel:
    """The pipeline runs one model per modality so far; say so instead of failing later."""
    if name != supported:
        raise ModelMissingError(
            f"{kind} model {name!r} is not wired into the pipeline yet; "
            f"use {kind}_model = {supported!r}"
        )
    return Registry(settings.models_dir).resolve(name)


@dataclass
class FrameFaces:
    """The faces found in one frame: boxes with their embeddings (no pixels kept)."""

    boxes: np.ndarray  # (n, 4) x0 y0 x1 y1
    vectors: np.ndarray  # (n, dim) unit rows
    quality: np.ndarray  # (n,)
    inter_eye_px: np.ndarray  # (n,)


class FaceFrameAnalyzer:
    """Detect, align and embed every face of a batch of frames in one model call.

    Detection and embedding sit in one actor so that chips (the pixels) never
    cross a process boundary; only boxes and vectors leave.
    """

    def __init__(self, settings: Settings) -> None:
        from modalities.face.dlib_face import DlibFaceDetector, DlibFaceEmbedder

        resolved = _resolve_supported("face", settings.face_model, "dlib-resnet", settings)
        self.detector = DlibFaceDetector(resolved, upsample=settings.face_upsample)
        self.embedder = DlibFaceEmbedder(resolved)
        self.model_id = self.embedder.model_id
        self.dim = self.embedder.dim

    def prepare(self, device: str = "cpu") -> None:
        self.detector.prepare(device)
        self.embedder.prepare(device)

    def analyze(self, images: Sequence[np.ndarray]) -> list[FrameFaces]:
        from modalities.face.dlib_face import FaceChip

        per_frame = self.detector.detect(images)
        chips = [
            FaceChip(f"{f}:{d}", det.chip, det.quality)
            for f, dets in enumerate(per_frame)
            for d, det in enumerate(dets)
        ]
        rows = self.embedder.embed(chips)
        out, cursor = [], 0
        for dets in per_frame:
            n = len(dets)
            out.append(
                FrameFaces(
                    boxes=np.array([d.box for d in dets], np.float32).reshape(n, 4),
                    vectors=rows.vectors[cursor : cursor + n],
                    quality=rows.quality[cursor : cursor + n],
                    inter_eye_px=np.array([d.inter_eye_px for d in dets], np.float32),
                )
            )
            cursor += n
        return out


class VoiceEmbedder:
    """The configured speaker encoder behind one `embed(segments)` call."""

    def __init__(self, settings: Settings) -> None:
        from modalities.voice.resemblyzer_voice import ResemblyzerExtractor

        resolved = _resolve_supported("voice", settings.voice_model, "resemblyzer-ge2e", settings)
        self.extractor = ResemblyzerExtractor(resolved, min_duration_s=settings.min_turn_s)
        self.model_id = self.extractor.model_id
        self.dim = self.extractor.dim

    def prepare(self, device: str = "cpu") -> None:
        self.extractor.prepare(device)

    def embed(self, items: Sequence[Any]) -> Embeddings:
        return self.extractor.embed(items)


MODEL_KINDS = {"face": (FaceFrameAnalyzer, "analyze"), "voice": (VoiceEmbedder, "embed")}


def build_model(kind: str, settings: Settings, device: str = "cpu") -> Any:
    cls, _method = MODEL_KINDS[kind]
    model = cls(settings)
    model.prepare(device)
    return model
