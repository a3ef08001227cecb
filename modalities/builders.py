"""Builders of the built-in models, named by their registry declarations (`ModelSpec.builder`).

Each is `builder(resolved, settings) -> Extractor`: it reads from the settings only what its
model takes (the declaration's `output_settings`). A model added outside biofuse names its own
builder in its own module; nothing here needs to change for it.
"""

from __future__ import annotations

from typing import Any

from biofuse.registry import ResolvedModel


def dlib_resnet(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.face.dlib_face import DlibFaceEmbedder

    return DlibFaceEmbedder(resolved, batch_size=settings.batch_size)


def adaface(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.face.adaface import MODEL_DEPTHS, AdaFaceEmbedder

    return AdaFaceEmbedder(
        resolved,
        int(resolved.spec.extra.get("depth", MODEL_DEPTHS.get(resolved.spec.name, 0))),
        batch_size=settings.batch_size,
        flip_tta=settings.face_flip_tta,
    )


def kprpe(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.face.kprpe import KPRPEEmbedder

    return KPRPEEmbedder(resolved, batch_size=settings.batch_size)


def resemblyzer(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.voice.resemblyzer_voice import ResemblyzerExtractor

    return ResemblyzerExtractor(resolved, min_duration_s=settings.min_turn_s)


def ecapa(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.voice.ecapa import EcapaExtractor

    return EcapaExtractor(resolved, min_duration_s=settings.min_turn_s)


def gei(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.gait.gei import GeiGaitExtractor

    return GeiGaitExtractor(resolved)


def gaitbase(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.gait.extractors import GaitBaseExtractor
    from biofuse.modalities.gait.gaitbase import GAITBASE_CASIAB

    return GaitBaseExtractor(resolved, GAITBASE_CASIAB)


def gait_compact(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.gait.compact import COMPACT_CONFIG
    from biofuse.modalities.gait.extractors import GaitBaseExtractor

    return GaitBaseExtractor(resolved, COMPACT_CONFIG)


def deepgaitv2(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.gait.deepgaitv2 import DEEPGAITV2_CASIAB, load_deepgaitv2_safetensors
    from biofuse.modalities.gait.extractors import GaitBaseExtractor

    return GaitBaseExtractor(
        resolved,
        DEEPGAITV2_CASIAB,  # type: ignore[arg-type]  # same embedding_shape API
        loader=load_deepgaitv2_safetensors,
        packed=False,  # one sequence per forward: its temporal conv would cross packed ones
    )


def anthropometric(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.body.anthropometric import AnthropometricBodyExtractor

    return AnthropometricBodyExtractor(resolved)


def clip_student(resolved: ResolvedModel, settings: Any) -> Any:
    from biofuse.modalities.body.clip_student import ClipStudentBodyExtractor

    return ClipStudentBodyExtractor(resolved)
