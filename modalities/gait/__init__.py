"""Gait modality: silhouette sequences of a person track -> GaitBase part embeddings."""

from modalities.gait.gaitbase import (
    GAITBASE_CASIAB,
    GAITBASE_CONFIGS,
    GaitBase,
    GaitBaseConfig,
    ResNet9Config,
    SeparateBNNecksConfig,
    SeparateFCsConfig,
    base_sil_cutting,
    build_gaitbase,
    gait_distance,
    load_gaitbase,
    read_opengait_state_dict,
)

__all__ = [
    "GAITBASE_CASIAB",
    "GAITBASE_CONFIGS",
    "GaitBase",
    "GaitBaseConfig",
    "ResNet9Config",
    "SeparateBNNecksConfig",
    "SeparateFCsConfig",
    "base_sil_cutting",
    "build_gaitbase",
    "gait_distance",
    "load_gaitbase",
    "read_opengait_state_dict",
]
