"""Gait modality: silhouette sequences of a person track -> gait embeddings.

The offline default is our GEI + PCA + LDA model (`gei.py`, weights trained on CASIA-B and
shipped in `weights/`); GaitBase (official OpenGait checkpoints) and our compact GaitBase-like
model share one extractor (`extractors.py`).
"""

from biofuse.modalities.gait.compact import COMPACT_CONFIG
from biofuse.modalities.gait.extractors import GaitBaseExtractor
from biofuse.modalities.gait.gaitbase import (
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
from biofuse.modalities.gait.gei import GeiGaitExtractor, GeiPcaLda

__all__ = [
    "COMPACT_CONFIG",
    "GaitBaseExtractor",
    "GeiGaitExtractor",
    "GeiPcaLda",
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
