"""One typed configuration: defaults < `biofuse.toml` < BIOFUSE_* environment variables.

The file is `$BIOFUSE_CONFIG` if set, else `./biofuse.toml` if present. Each field
can be overridden by `BIOFUSE_<FIELD>` (upper case), e.g. `BIOFUSE_NUM_GPUS=1`; lists
are comma-separated (`BIOFUSE_MODALITIES=face,voice`), mappings JSON or comma-separated
pairs (`BIOFUSE_FUSION_WEIGHTS=face=2,voice=0.5`). pydantic-settings reads both sources;
`load_settings` also checks every configured model name against the registry, so a typo
is one line at start-up, not a failure after Ray has started.
"""

from __future__ import annotations

import json
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from biofuse.errors import ConfigError


class Settings(BaseModel):
    # hide_input_in_errors: a wrong value never echoes a token or a database password
    model_config = ConfigDict(extra="forbid", validate_assignment=True, hide_input_in_errors=True)

    home: Path = Field(default_factory=lambda: Path.home() / ".biofuse")
    catalog_url: str = ""  # default: sqlite:///{home}/catalog.sqlite
    store_url: str = ""  # default: {home}/store ; any fsspec URL at scale
    models_dir: Path | None = None  # default: {home}/models

    ray_address: str | None = (
        None  # None: a local Ray; "ray://host:10001" or "auto" joins a cluster
    )
    num_gpus: float = Field(0.0, ge=0)  # per model actor
    num_cpus_per_actor: float = Field(0.5, gt=0)  # dlib and the encoders use ~1 thread
    # Model replicas (Ray actors); calls alternate between them. Face is ~99% of the model
    # time on CPU: two face actors made the sample archive 1.8x faster on 2 cores.
    face_actors: int = Field(2, ge=1)
    voice_actors: int = Field(1, ge=1)
    batch_size: int = Field(32, ge=1)  # items per model call, gathered across videos
    batch_wait_ms: float = Field(20.0, ge=0)  # how long an actor waits to fill a batch
    max_parallel_videos: int = Field(2, ge=1)
    task_retries: int = Field(2, ge=0)

    # Model names are registry names (biofuse/registry.py, `biofuse models list`), checked at
    # start by `check_model_names`. dlib-resnet ships offline; adaface-* need
    # `biofuse models add adaface-irN FILE.ckpt`.
    face_model: str = "dlib-resnet"
    voice_model: str = "resemblyzer-ge2e"
    # gait-compact-casiab and gei-pca-lda-casiab ship offline (trained by us on CASIA-B; the
    # compact CNN wins the standard protocol, benchmarks/results/gait_casiab.md);
    # gaitbase-casiab needs `biofuse models add gaitbase-casiab FILE.pt` (official OpenGait)
    gait_model: str = "gait-compact-casiab"
    # mediapipe-pose-anthropometric ships offline (MediaPipe Pose); clip3dreid-student-rn50
    # needs `biofuse models add clip3dreid-student-rn50 FILE`
    body_model: str = "mediapipe-pose-anthropometric"
    # gait and body hang on person tracks (a person pass at person_fps): add them for scenes where
    # whole bodies are in view; the default keeps face+voice archives at their speed
    # each one a declared modality (biofuse.registry.MODALITIES)
    modalities: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["face", "voice"])
    face_fps: float = Field(5.0, gt=0)  # frames per second sent to the face detector
    # person tracks (person_detector below + ByteTrack-style tracker), made when gait or body
    # is among the modalities; 0 turns them off (faces then form their own tracks). HOG's cost
    # grows as 1/person_min_height_px^2; background subtraction's barely.
    person_fps: float = Field(10.0, ge=0)
    person_min_height_px: float = Field(64.0, gt=0)  # smallest person looked for
    # how people are found: "background" subtraction (OpenCV MOG2, fixed cameras; its masks
    # make the gait silhouettes), "hog" (OpenCV's people detector, any camera, ~10x slower),
    # or "auto": background, with HOG for the frames where the camera moves
    # (benchmarks/results/person_tracking.md)
    person_detector: Literal["auto", "background", "hog"] = "auto"
    # face detector: mtcnn (facenet-pytorch's bundled nets, batched on the face actor's device;
    # on lfw-dev frames it finds 99 % of 24-px faces, 92 % at 16, 53 % at 12; HOG 0 % below 32,
    # benchmarks/results/face_distance*.md) or hog (dlib's; ~0.7x MTCNN's CPU per frame)
    face_detector: Literal["mtcnn", "hog"] = "mtcnn"
    face_min_px: float = Field(12.0, ge=4)  # MTCNN: smallest face box side it looks for
    face_upsample: int = Field(1, ge=0)  # dlib HOG upsampling: 1 finds faces down to ~40 px
    face_flip_tta: bool = True  # AdaFace: fuse each chip with its mirror (2x compute)
    track_iou: float = Field(0.3, gt=0, lt=1)
    track_max_gap_s: float = Field(1.0, ge=0)
    track_min_frames: int = Field(2, ge=1)
    # speech detector: silero (default; its model ships in `silero-vad`: AMI DER 43.7 % vs
    # 54.1 %, voice EER 1.07 % vs 1.44 %, benchmarks/results/voice_*.md), webrtc, energy (numpy)
    vad: Literal["webrtc", "energy", "silero"] = "silero"
    min_turn_s: float = Field(1.0, gt=0)
    # who spoke when inside a video: one voice probe per speaker instead of one per turn
    diarize: bool = True
    diarize_method: Literal["agglomerative", "spectral"] = "agglomerative"
    # cosine distance at which agglomerative clustering stops; unset: the voice model's own
    # (its registry declaration's `settings["diarize_threshold"]`, e.g. resemblyzer-ge2e's 0.35
    # tuned on AMI by benchmarks/voice_ami.py)
    diarize_threshold: float | None = Field(None, gt=0, lt=2)

    top_k: int = Field(5, ge=1)
    prior_in_gallery: float = Field(0.5, gt=0, lt=1)  # sets the open-set threshold
    # how identify fuses calibrated per-modality LLRs: a rule (fusion/rules.py) or a learned
    # fusion trained by `biofuse calibrate --learned KIND` (fusion/learned.py)
    fusion_method: Literal[
        "sum", "mean", "max", "weighted", "quality", "logistic", "gboost", "mlp"
    ] = "sum"
    # `weighted`: modality -> w; env: JSON or `face=2,voice=0.5`
    fusion_weights: Annotated[dict[str, float], NoDecode] = Field(default_factory=dict)
    # written by `biofuse calibrate`; when present, identify uses its calibrations and its
    # open-set threshold (fitted for a target FPIR) instead of prior_in_gallery's
    calibration_path: Path | None = None  # default: {home}/calibration.json
    learned_fusion_dir: Path | None = None  # default: {home}/fusion
    target_fpir: float = Field(0.01, gt=0, lt=1)  # `biofuse calibrate`'s default target

    # gallery rebuild and analyst access (ops issue)
    gallery_keep_versions: int = Field(5, ge=1)  # built galleries kept on disk, current included
    # the rebuild refits calibration from leave-one-out enrollment pairs only with at least
    # this many per class: 48 genuine pairs gave Cllr 0.136 vs the shipped default's 0.096 on
    # LFW (benchmarks/gallery_calibration.py), and LLRs are capped at log(1 + pairs)
    gallery_min_calibration_pairs: int = Field(200, ge=2)
    # gallery search (fusion/search.py): the index the rebuild writes beside each version for
    # inner-product (cosine) models - auto: exact (IndexFlatIP) below gallery_index_min_rows
    # templates, HNSW from there; ivfpq for memory (64-byte codes, shortlist rescored exactly)
    gallery_index: Literal["auto", "exact", "hnsw", "ivfpq"] = "auto"
    gallery_index_min_rows: int = Field(200_000, ge=1)
    # identify scores every template of a modality up to this many identities (today's
    # brute force); above it, only a shortlist of gallery_shortlist per probe from the index,
    # each candidate then scored exactly in every modality
    gallery_shortlist_above: int = Field(20_000, ge=0)
    gallery_shortlist: int = Field(200, ge=1)
    # analyst API tokens: "name[:role]=token" (audited as name; role analyst or admin),
    # "name[:role]=sha256:HEX" or a bare token; env: comma-separated. Kept as sha256 only.
    api_tokens: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # a file of such entries, one a line, unreadable by others (`biofuse serve --tokens-file`)
    api_tokens_file: Path | None = None
    # Python modules imported at start and in every model actor; each registers its models
    # with `biofuse.registry.register(ModelSpec(...))`. Trusted code, like any installed package.
    plugins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    serve_host: str = "127.0.0.1"
    serve_port: int = Field(8765, ge=1, le=65535)
    # Host names answered besides localhost/127.0.0.1/[::1] when bound to loopback (the name
    # a reverse proxy forwards); others get 400 (DNS rebinding). env: comma-separated
    serve_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)

    @field_validator("api_tokens")
    @classmethod
    def _hash_tokens(cls, entries: list[str]) -> list[str]:
        from biofuse.serve.tokens import hash_entry

        try:
            return [hash_entry(e, f"entry {n}") for n, e in enumerate(entries, 1)]
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("modalities", "api_tokens", "serve_allowed_hosts", "plugins", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):  # from the environment: "face,voice"
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("modalities")
    @classmethod
    def _declared_modalities(cls, value: list[str]) -> list[str]:
        from biofuse.registry import MODALITIES

        unknown = [m for m in value if m not in MODALITIES]
        if unknown:
            raise ValueError(f"unknown modality {unknown[0]!r}: use {', '.join(MODALITIES)}")
        return value

    @field_validator("fusion_weights", mode="before")
    @classmethod
    def _weights(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.startswith("{"):  # from the environment: JSON
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not a JSON object ({exc.msg})") from None
        pairs = [part.strip() for part in text.split(",") if part.strip()]
        if any("=" not in p for p in pairs):
            raise ValueError("expected JSON or MODALITY=WEIGHT pairs, e.g. face=2,voice=0.5")
        return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        home = Path(self.home).expanduser()
        object.__setattr__(self, "home", home)
        if not self.catalog_url:
            object.__setattr__(self, "catalog_url", f"sqlite:///{home / 'catalog.sqlite'}")
        if not self.store_url:
            object.__setattr__(self, "store_url", str(home / "store"))
        if self.models_dir is None:
            object.__setattr__(self, "models_dir", home / "models")
        return self


def shared_data_dir() -> Path:
    """Shared evaluation data: $BIOFUSE_SHARED_DATA, else `shared/data` beside the repository."""
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    return Path(os.environ.get("BIOFUSE_SHARED_DATA", default))


# the TOML file `load_settings` reads, for `_Sources.settings_customise_sources`
_TOML_FILE: ContextVar[Path | None] = ContextVar("biofuse_toml_file", default=None)


class _Sources(Settings, BaseSettings):
    """Settings gathered by pydantic-settings: arguments > BIOFUSE_* variables > the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="BIOFUSE_", extra="forbid", validate_assignment=True, case_sensitive=False
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = _TOML_FILE.get()
        if toml_file is None:
            return (init_settings, env_settings)
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file))


def _one_line(exc: ValidationError, path: Path | None) -> str:
    """Each problem as `field: what is wrong`, on one line; values are not echoed (secrets)."""
    where = f"{path} or BIOFUSE_* variables" if path else "BIOFUSE_* variables"
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown setting {field!r}")
        else:
            problems.append(f"{field} (BIOFUSE_{field.split('.')[0].upper()}): {error['msg']}")
    return f"invalid configuration in {where}: " + "; ".join(problems)


def check_model_names(settings: Settings) -> None:
    """Every configured model name is a registry model of its modality (before anything starts)."""
    import importlib

    from biofuse.registry import MODALITIES, SPECS

    for module in settings.plugins:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"invalid configuration: plugin {module!r}: {exc}") from None
    for modality in MODALITIES:
        name = getattr(settings, f"{modality}_model")
        spec = SPECS.get(name)
        if spec is None or spec.modality != modality:
            known = ", ".join(s.name for s in SPECS.values() if s.modality == modality)
            raise ConfigError(
                f"invalid configuration: {modality}_model {name!r} is not a {modality} model; "
                f"use one of {known} (`biofuse models list`)"
            )


def load_settings(path: Path | None = None, **overrides: object) -> Settings:
    """Settings from the file, then the environment, then explicit overrides."""
    path = path or (Path(os.environ["BIOFUSE_CONFIG"]) if "BIOFUSE_CONFIG" in os.environ else None)
    if path is None and Path("biofuse.toml").exists():
        path = Path("biofuse.toml")
    if path is not None:
        try:  # read here first: a clear message for a missing file or a TOML syntax error
            tomllib.loads(Path(path).read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ConfigError(f"cannot read config file {path}: {reason}") from None
    token = _TOML_FILE.set(Path(path) if path is not None else None)
    try:
        loaded = _Sources(**{k: v for k, v in overrides.items() if v is not None})
        settings = Settings(**loaded.model_dump())
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from None
    finally:
        _TOML_FILE.reset(token)
    check_model_names(settings)
    return settings
