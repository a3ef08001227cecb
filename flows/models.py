"""Build the configured models by name. Pure: used in Ray actors and in direct calls alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from biofuse.fusion.calibration import load_default
from biofuse.modalities.base import Embeddings

from biofuse.config import Settings
from biofuse.errors import ModelMissingError
from biofuse.registry import SPECS, DeclarationError, ModelSpec, Registry, load_builder


def import_plugins(settings: Settings) -> None:
    """Import the `plugins` modules, which register their models (`biofuse.registry.register`).

    Called wherever models are built, so a Ray actor's process knows them too.
    """
    import importlib

    for module in settings.plugins:
        importlib.import_module(module)


def configured_spec(kind: str, settings: Settings) -> ModelSpec:
    """The declaration of the `{kind}_model` setting's model; it must be a `kind` model."""
    import_plugins(settings)
    name = getattr(settings, f"{kind}_model")
    spec = SPECS.get(name)
    if spec is None or spec.modality != kind:
        raise ModelMissingError(
            f"{kind}_model {name!r} is not a {kind} model; use one of "
            + ", ".join(repr(s.name) for s in SPECS.values() if s.modality == kind)
        )
    return spec


def build_extractor(spec: ModelSpec, settings: Settings) -> Any:
    """The declared model, built by its declared builder from its resolved weights."""
    resolved = Registry(settings.models_dir).resolve(spec.name)  # "models add" error if absent
    extractor = load_builder(spec)(resolved, settings)
    if extractor.dim != spec.dim:
        raise DeclarationError(
            f"model {spec.name!r} declares dim {spec.dim} but its builder made {extractor.dim}"
        )
    load_default(resolved.model_id)  # a declared calibration that cannot load fails at start
    return extractor


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
        from biofuse.modalities.face.dlib_face import DlibFaceDetector

        spec = configured_spec("face", settings)
        self.spec = spec
        self.name = spec.name
        # the declared input: dlib's own 150-px chips, or the ArcFace 112-px template
        self.chips = spec.input == "dlib-chip"
        dlib_model = Registry(settings.models_dir).resolve("dlib-resnet")  # detector, landmarks
        self.landmarker: Any = None
        if settings.face_detector == "mtcnn":
            from biofuse.modalities.face.mtcnn_detect import (
                DEFAULT_CHIP_ALIGNMENT,
                MtcnnFaceDetector,
            )

            self.detector: Any = MtcnnFaceDetector(
                dlib_model,
                min_face_px=settings.face_min_px,
                chip_alignment=DEFAULT_CHIP_ALIGNMENT if self.chips else "none",
            )
        else:
            self.detector = DlibFaceDetector(
                dlib_model, upsample=settings.face_upsample, make_chips=self.chips
            )
        if not self.chips and settings.face_detector == "hog":
            from biofuse.modalities.face.align import Dlib68Landmarker

            self.landmarker = Dlib68Landmarker()
        self.embedder: Any = build_extractor(spec, settings)
        self.model_id = self.embedder.model_id
        self.dim = self.embedder.dim
        self.outlier_cos = spec.same_person_cos  # for aggregate_track on this model's rows

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
        if self.chips:
            from biofuse.modalities.face.dlib_face import FaceChip

            return self.embedder.embed(
                [FaceChip(f"{f}:{d}", det.chip, det.quality) for f, d, det in faces]
            )
        from biofuse.modalities.face.adaface import AlignedFace
        from biofuse.modalities.face.align import align_face

        points = [self._points5(images[f], det) for f, _, det in faces]
        chips = [align_face(images[f], p) for (f, _, _), p in zip(faces, points)]
        if self.spec.input == "aligned-112-points5":  # the chip and its landmarks (KP-RPE)
            from biofuse.modalities.face.kprpe import KeypointFace, chip_landmarks

            return self.embedder.embed(
                [
                    KeypointFace(f"{f}:{d}", chip, chip_landmarks(p), det.quality)
                    for (f, d, det), chip, p in zip(faces, chips, points)
                ]
            )
        return self.embedder.embed(
            [AlignedFace(f"{f}:{d}", chip, det.quality) for (f, d, det), chip in zip(faces, chips)]
        )

    def analyze(self, images: Sequence[np.ndarray]) -> list[FrameFaces]:
        from biofuse.modalities.face.quality import adaface_quality

        per_frame = self.detector.detect(images)
        faces = [(f, d, det) for f, dets in enumerate(per_frame) for d, det in enumerate(dets)]
        rows = self._embed(images, faces)
        scores = np.array([det.score for _, _, det in faces], np.float32)
        eyes = np.array([det.inter_eye_px for _, _, det in faces], np.float32)
        if "feature_norm" not in rows.extra:  # no network quality signal: the detector's
            norms = np.full(len(faces), np.nan, np.float32)
            quality = rows.quality
        else:  # AdaFace-style: the feature norm discounts faces the network finds little in
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


class DeclaredEmbedder(ConfiguredExtractor):
    """The configured model of `kind` (`{kind}_model`), built as its declaration says."""

    kind = ""

    def __init__(self, settings: Settings) -> None:
        self.spec = configured_spec(self.kind, settings)
        self._use(build_extractor(self.spec, settings))


class VoiceEmbedder(DeclaredEmbedder):
    """The configured speaker encoder (`voice_model`) behind one `embed(segments)` call.

    Every encoder takes the same `AudioSegment`s and applies the same minimum turn duration, so
    the pipeline and diarization do not depend on which one is configured.
    """

    kind = "voice"


class BodyEmbedder(DeclaredEmbedder):
    """The configured body-shape model (`body_model`) behind one `embed(items)` call.

    Its declared input says what the pipeline sends: `PoseSequence`s (keypoints computed where
    the frames were, `biofuse.modalities.body.anthropometric.track_pose`; pixels stay out of
    the actor)
    or `PersonCrops`.
    """

    kind = "body"


class GaitEmbedder(DeclaredEmbedder):
    """The configured gait model (`gait_model`) behind one `embed(silhouette sequences)` call.

    Every gait model takes the tracker's `SilhouetteSequence`s (OpenGait-pretreated 64x64) and
    returns one row per sequence with foreground, compared by its declared metric.
    """

    kind = "gait"


class PersonFrameAnalyzer:
    """Find the people of a batch of frames (boxes and detector scores; no pixels leave).

    OpenCV's HOG people detector ships inside OpenCV, so its id is the hash of its SVM
    and of the settings that change its boxes, not a registry file.
    """

    def __init__(self, settings: Settings) -> None:
        import hashlib

        import cv2
        from biofuse.modalities.body.person_detect import HogPersonDetector

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
