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


def resolve_wired(kind: str, name: str, wired: Sequence[str], settings: Settings) -> ResolvedModel:
    """The registry entry of a model the pipeline can run, or a clear error naming those it can."""
    if name not in wired:
        raise ModelMissingError(
            f"{kind} model {name!r} is not wired into the pipeline; use {kind}_model = one of "
            f"{', '.join(repr(m) for m in wired)}"
        )
    return Registry(settings.models_dir).resolve(name)


class ConfiguredExtractor:
    """One configured Extractor behind `embed(items)`: what a Ray actor of that kind holds."""

    extractor: Any

    def _use(self, extractor: Any) -> None:
        self.extractor = extractor
        self.model_id = extractor.model_id
        self.dim = extractor.dim

    def prepare(self, device: str = "cpu") -> None:
        self.extractor.prepare(device)

    def embed(self, items: Sequence[Any]) -> Embeddings:
        return self.extractor.embed(items)


@dataclass
class FrameFaces:
    """The faces found in one frame: boxes with their embeddings (no pixels kept).

    `quality` is what the track template weights by; the facts it is made of travel with it
    (see modalities/face/quality.py for the formula).
    """

    boxes: np.ndarray  # (n, 4) x0 y0 x1 y1
    vectors: np.ndarray  # (n, dim) unit rows
    quality: np.ndarray  # (n,)
    inter_eye_px: np.ndarray  # (n,)
    # (n,) HOG SVM margin (0 at its threshold) or MTCNN's half-logit probability (score_to_margin)
    detector_score: np.ndarray | None = None
    feature_norm: np.ndarray | None = None  # (n,) AdaFace's pre-normalisation norm; NaN: none


FACE_MODELS = ("dlib-resnet", "adaface-ir18", "adaface-ir50", "adaface-ir101")


class FaceFrameAnalyzer:
    """Detect, align and embed every face of a batch of frames in one model call.

    Detection and embedding sit in one actor so that chips (the pixels) never
    cross a process boundary; only boxes and vectors leave. The detector is `face_detector`:
    MTCNN (default; batched over the call's frames on the actor's device, faces down to
    ~`face_min_px`) or dlib's HOG. dlib-resnet gets its 150-px chip from dlib's 5-point
    predictor (HOG: on the HOG box; MTCNN: as `mtcnn_detect.DEFAULT_CHIP_ALIGNMENT` says,
    measured on lfw-dev). AdaFace is aligned onto the ArcFace 112-px template from MTCNN's
    own five points, or with HOG from the 68-point predictor (the 5-point model has no mouth
    corners; on lfw-dev the 68-point template alignment scores 97.89 % vs dlib's own chips'
    97.33 %, benchmarks/results/lfw_alignment.md).
    """

    def __init__(self, settings: Settings) -> None:
        from modalities.face.dlib_face import DlibFaceDetector, DlibFaceEmbedder
        from modalities.face.quality import same_person_cos

        name = settings.face_model
        resolve_wired("face", name, FACE_MODELS, settings)
        registry = Registry(settings.models_dir)
        dlib_model = registry.resolve("dlib-resnet")  # detector + landmarks for every model
        self.name = name
        self.adaface = name != "dlib-resnet"
        self.landmarker: Any = None
        self.embedder: Any
        if settings.face_detector == "mtcnn":
            from modalities.face.mtcnn_detect import DEFAULT_CHIP_ALIGNMENT, MtcnnFaceDetector

            self.detector: Any = MtcnnFaceDetector(
                dlib_model,
                min_face_px=settings.face_min_px,
                chip_alignment="none" if self.adaface else DEFAULT_CHIP_ALIGNMENT,
            )
        else:
            self.detector = DlibFaceDetector(
                dlib_model, upsample=settings.face_upsample, make_chips=not self.adaface
            )
        if not self.adaface:
            self.embedder = DlibFaceEmbedder(dlib_model, batch_size=settings.batch_size)
        else:
            from modalities.face.adaface import MODEL_DEPTHS, AdaFaceEmbedder
            from modalities.face.align import Dlib68Landmarker

            resolved = registry.resolve(name)  # a clear "biofuse models add" error if absent
            if settings.face_detector == "hog":
                self.landmarker = Dlib68Landmarker()
            self.embedder = AdaFaceEmbedder(
                resolved,
                MODEL_DEPTHS[name],
                batch_size=settings.batch_size,
                flip_tta=settings.face_flip_tta,
            )
        self.model_id = self.embedder.model_id
        self.dim = self.embedder.dim
        self.outlier_cos = same_person_cos(name)  # for aggregate_track on this model's rows

    def prepare(self, device: str = "cpu") -> None:
        """MTCNN and AdaFace go to `device` (AdaFace on CUDA: bf16, channels_last); dlib is CPU."""
        self.detector.prepare(device)
        if self.landmarker is not None:
            self.landmarker.prepare(device)
        self.embedder.prepare(device)

    def _points5(self, image: np.ndarray, det: Any) -> np.ndarray:
        """The ArcFace template's five points: MTCNN's own, else from the 68-point predictor."""
        if det.points5 is not None:
            return det.points5
        return self.landmarker.landmarks5(image, det.box)

    def _embed(self, images: Sequence[np.ndarray], faces: list[tuple[int, int, Any]]) -> Any:
        """Rows for every (frame, index, detection), in that order."""
        if not self.adaface:
            from modalities.face.dlib_face import FaceChip

            return self.embedder.embed(
                [FaceChip(f"{f}:{d}", det.chip, det.quality) for f, d, det in faces]
            )
        from modalities.face.adaface import AlignedFace
        from modalities.face.align import align_face

        aligned = [
            AlignedFace(
                f"{f}:{d}", align_face(images[f], self._points5(images[f], det)), det.quality
            )
            for f, d, det in faces
        ]
        return self.embedder.embed(aligned)

    def analyze(self, images: Sequence[np.ndarray]) -> list[FrameFaces]:
        from modalities.face.quality import adaface_quality

        per_frame = self.detector.detect(images)
        faces = [(f, d, det) for f, dets in enumerate(per_frame) for d, det in enumerate(dets)]
        rows = self._embed(images, faces)
        scores = np.array([det.score for _, _, det in faces], np.float32)
        eyes = np.array([det.inter_eye_px for _, _, det in faces], np.float32)
        if not self.adaface:
            norms = np.full(len(faces), np.nan, np.float32)
            quality = rows.quality
        else:
            norms = rows.extra.get("feature_norm", np.zeros(0, np.float32))
            quality = adaface_quality(scores, eyes, norms)
        out, cursor = [], 0
        for dets in per_frame:
            n = len(dets)
            part = slice(cursor, cursor + n)
            out.append(
                FrameFaces(
                    boxes=np.array([d.box for d in dets], np.float32).reshape(n, 4),
                    vectors=rows.vectors[part],
                    quality=quality[part],
                    inter_eye_px=eyes[part],
                    detector_score=scores[part],
                    feature_norm=norms[part],
                )
            )
            cursor += n
        return out


VOICE_MODELS = ("resemblyzer-ge2e", "ecapa-voxceleb")  # names VoiceEmbedder can build


class VoiceEmbedder(ConfiguredExtractor):
    """The configured speaker encoder (`voice_model`) behind one `embed(segments)` call.

    Every encoder takes the same `AudioSegment`s and applies the same minimum turn duration, so
    the pipeline and diarization do not depend on which one is configured.
    """

    def __init__(self, settings: Settings) -> None:
        name = settings.voice_model
        resolved = resolve_wired("voice", name, VOICE_MODELS, settings)
        if name == "ecapa-voxceleb":
            from modalities.voice.ecapa import EcapaExtractor

            self._use(EcapaExtractor(resolved, min_duration_s=settings.min_turn_s))
        else:
            from modalities.voice.resemblyzer_voice import ResemblyzerExtractor

            self._use(ResemblyzerExtractor(resolved, min_duration_s=settings.min_turn_s))


BODY_MODELS = ("mediapipe-pose-anthropometric", "clip3dreid-student-rn50")


class BodyEmbedder(ConfiguredExtractor):
    """The configured body-shape model (`body_model`) behind one `embed(items)` call.

    The anthropometric default takes `PoseSequence`s (keypoints computed where the frames were,
    by `modalities.body.anthropometric.track_pose`); the CLIP-distilled student takes
    `PersonCrops`. Pixels stay out of the actor for the default: only keypoints cross over.
    """

    def __init__(self, settings: Settings) -> None:
        name = settings.body_model
        resolved = resolve_wired("body", name, BODY_MODELS, settings)
        if name == "clip3dreid-student-rn50":
            from modalities.body.clip_student import ClipStudentBodyExtractor

            self._use(ClipStudentBodyExtractor(resolved))
        else:
            from modalities.body.anthropometric import AnthropometricBodyExtractor

            self._use(AnthropometricBodyExtractor(resolved))


GAIT_MODELS = (
    "gei-pca-lda-casiab",
    "gaitbase-casiab",
    "gait-compact-casiab",
    "deepgaitv2-casiab",
)


class GaitEmbedder(ConfiguredExtractor):
    """The configured gait model (`gait_model`) behind one `embed(silhouette sequences)` call.

    Every gait model takes the tracker's `SilhouetteSequence`s (OpenGait-pretreated 64x64), so
    the pipeline does not depend on which is configured; each returns one row per sequence
    with foreground (GEI: unit rows, cosine; GaitBase family: flattened part embeddings).
    """

    def __init__(self, settings: Settings) -> None:
        name = settings.gait_model
        resolved = resolve_wired("gait", name, GAIT_MODELS, settings)
        if name == "gei-pca-lda-casiab":
            from modalities.gait.gei import GeiGaitExtractor

            self._use(GeiGaitExtractor(resolved))
        elif name == "deepgaitv2-casiab":
            from modalities.gait.deepgaitv2 import DEEPGAITV2_CASIAB, load_deepgaitv2_safetensors
            from modalities.gait.extractors import GaitBaseExtractor

            self._use(
                GaitBaseExtractor(
                    resolved,
                    DEEPGAITV2_CASIAB,  # type: ignore[arg-type]  # same embedding_shape API
                    loader=load_deepgaitv2_safetensors,
                    packed=False,
                )
            )
        else:
            from modalities.gait.compact import COMPACT_CONFIG
            from modalities.gait.extractors import GaitBaseExtractor
            from modalities.gait.gaitbase import GAITBASE_CASIAB

            config = GAITBASE_CASIAB if name == "gaitbase-casiab" else COMPACT_CONFIG
            self._use(GaitBaseExtractor(resolved, config))


class PersonFrameAnalyzer:
    """Find the people of a batch of frames (boxes and detector scores; no pixels leave).

    OpenCV's HOG people detector ships inside OpenCV, so its id is the hash of its SVM
    and of the settings that change its boxes, not a registry file.
    """

    def __init__(self, settings: Settings) -> None:
        import hashlib

        import cv2

        from modalities.body.person_detect import HogPersonDetector

        self.detector = HogPersonDetector(min_height_px=settings.person_min_height_px)
        digest = hashlib.sha256(cv2.HOGDescriptor_getDefaultPeopleDetector().tobytes())
        digest.update(repr(sorted(vars(self.detector).items())).encode())
        self.model_id = f"{HogPersonDetector.name}-{digest.hexdigest()[:12]}"

    def prepare(self, device: str = "cpu") -> None:
        self.detector.prepare(device)

    def analyze(self, images: Sequence[np.ndarray]) -> list[Any]:
        return self.detector.detect(images)


MODEL_KINDS = {
    "face": (FaceFrameAnalyzer, "analyze"),
    "voice": (VoiceEmbedder, "embed"),
    "body": (BodyEmbedder, "embed"),
    "gait": (GaitEmbedder, "embed"),
    "person": (PersonFrameAnalyzer, "analyze"),
}


def build_model(kind: str, settings: Settings, device: str = "cpu") -> Any:
    cls, _method = MODEL_KINDS[kind]
    model = cls(settings)
    model.prepare(device)
    return model
