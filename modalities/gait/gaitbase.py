"""GaitBase (OpenGait `Baseline` + ResNet9): silhouette sequences -> part embeddings.

Our own implementation of the inference graph. Module attributes carry OpenGait's names
(`Backbone.forward_block.*`, `FCs.fc_bin`, `BNNecks.*`) so an official OpenGait checkpoint's
`model` state_dict loads with `strict=True` and nothing is renamed. Architecture numbers are
config entries (`GaitBaseConfig`, mirroring the YAML's `model_cfg`), not constants in the code.

Shapes: a batch of silhouettes `[n, s, 64, 44]` (one sequence per row), or OpenGait's packed
form `[1, S, 64, 44]` with `seq_lengths` summing to S, gives embeddings `[n, 256, 16]`
(channels, horizontal parts). Compare them with `gait_distance`, the evaluator's metric.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from biofuse.errors import ModelMissingError
from biofuse.registry import ModelSpec, install_file

# -- config --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResNet9Config:
    """`backbone_cfg` of the YAML (OpenGait's ResNet9 on torchvision's ResNet)."""

    block: str = "BasicBlock"
    channels: tuple[int, ...] = (64, 128, 256, 512)
    layers: tuple[int, ...] = (1, 1, 1, 1)
    strides: tuple[int, ...] = (1, 2, 2, 1)
    maxpool: bool = False
    in_channel: int = 1


@dataclass(frozen=True)
class SeparateFCsConfig:
    """One bias-free `in_channels -> out_channels` matrix per horizontal part."""

    in_channels: int = 512
    out_channels: int = 256
    parts_num: int = 16
    norm: bool = False


@dataclass(frozen=True)
class SeparateBNNecksConfig:
    """Training-only classifier head; kept so official checkpoints load strictly."""

    class_num: int = 74
    in_channels: int = 256
    parts_num: int = 16
    norm: bool = True
    parallel_bn1d: bool = True


@dataclass(frozen=True)
class GaitBaseConfig:
    """`model_cfg` of a GaitBase YAML; the defaults are `gaitbase_da_casiab.yaml`."""

    backbone: ResNet9Config = field(default_factory=ResNet9Config)
    separate_fcs: SeparateFCsConfig = field(default_factory=SeparateFCsConfig)
    separate_bnnecks: SeparateBNNecksConfig = field(default_factory=SeparateBNNecksConfig)
    bin_num: tuple[int, ...] = (16,)

    def __post_init__(self) -> None:
        bb, fcs, necks = self.backbone, self.separate_fcs, self.separate_bnnecks
        problems = []
        if bb.block != "BasicBlock":
            problems.append(f"backbone block {bb.block!r} (only 'BasicBlock' is implemented)")
        if not len(bb.channels) == len(bb.layers) == len(bb.strides) == 4:
            problems.append("backbone channels/layers/strides need 4 stages each")
        if fcs.parts_num != sum(self.bin_num):
            problems.append(f"SeparateFCs parts_num {fcs.parts_num} != sum(bin_num)")
        if bb.channels and fcs.in_channels != bb.channels[-1]:
            problems.append(f"SeparateFCs in_channels {fcs.in_channels} != backbone output")
        if (necks.in_channels, necks.parts_num) != (fcs.out_channels, fcs.parts_num):
            problems.append("SeparateBNNecks in_channels/parts_num differ from SeparateFCs")
        if problems:
            raise ValueError("invalid GaitBase config: " + "; ".join(problems))

    @property
    def embedding_shape(self) -> tuple[int, int]:
        """(channels, parts) of one sequence's embedding."""
        return self.separate_fcs.out_channels, self.separate_fcs.parts_num

    @classmethod
    def from_model_cfg(cls, model_cfg: Mapping[str, Any]) -> GaitBaseConfig:
        """Read an OpenGait YAML's `model_cfg` dict (`model: Baseline`), so configs stay data."""
        bb = dict(model_cfg.get("backbone_cfg", {}))
        kind = bb.pop("type", "ResNet9")
        if kind != "ResNet9":
            raise ValueError(f"GaitBase backbone {kind!r} is not implemented (only ResNet9)")
        for key in ("channels", "layers", "strides"):
            if key in bb:
                bb[key] = tuple(bb[key])
        necks = dict(model_cfg.get("SeparateBNNecks", {}))
        if "parallel_BN1d" in necks:
            necks["parallel_bn1d"] = necks.pop("parallel_BN1d")
        return cls(
            backbone=ResNet9Config(**bb),
            separate_fcs=SeparateFCsConfig(**model_cfg.get("SeparateFCs", {})),
            separate_bnnecks=SeparateBNNecksConfig(**necks),
            bin_num=tuple(model_cfg.get("bin_num", (16,))),
        )


def _with_class_num(class_num: int) -> GaitBaseConfig:
    return GaitBaseConfig(separate_bnnecks=SeparateBNNecksConfig(class_num=class_num))


# OpenGait's GaitBase configs differ only in the training identities (the classifier width).
GAITBASE_CONFIGS: dict[str, GaitBaseConfig] = {
    "casiab": _with_class_num(74),
    "oumvlp": _with_class_num(5153),
    "grew": _with_class_num(20000),
    "gait3d": _with_class_num(3000),
}
GAITBASE_CASIAB = GAITBASE_CONFIGS["casiab"]

# -- preprocessing -------------------------------------------------------------------------


def base_sil_cutting(frames: np.ndarray) -> np.ndarray:
    """OpenGait's `BaseSilCuttingTransform`: 64x64 uint8 silhouettes -> 64x44 floats in 0..1.

    The pretreated silhouettes are centred in a square; the network was trained on the middle
    44 columns, so `w // 64 * 10` columns are cut from each side, as the evaluator does.
    """
    frames = np.asarray(frames)
    cut = int(frames.shape[-1] // 64) * 10
    if cut:
        frames = frames[..., cut:-cut]
    return (frames / 255.0).astype(np.float32)


# -- network -------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """A bias-free conv under the name `.conv`, the key layout OpenGait's stem uses."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, pad: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BasicBlock(nn.Module):
    """torchvision's residual block (two 3x3 convs), with its attribute names for the keys."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet9(nn.Module):
    """Per-frame silhouette CNN: 3x3 stem, four residual stages, no pooling head."""

    def __init__(self, cfg: ResNet9Config) -> None:
        super().__init__()
        # Registration order = state_dict order = OpenGait's (conv1, bn1, layer1..4).
        self.conv1 = BasicConv2d(cfg.in_channel, cfg.channels[0], 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(cfg.channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if cfg.maxpool else nn.Identity()
        inplanes = cfg.channels[0]
        stages: list[nn.Module] = []
        for planes, blocks, stride in zip(cfg.channels, cfg.layers, cfg.strides):
            if blocks < 1:  # OpenGait turns an empty stage into the identity
                stages.append(nn.Identity())
                continue
            stage = [BasicBlock(inplanes, planes, stride)]
            stage += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class SetBlock(nn.Module):
    """Runs a 2-D block on every frame of `[n, c, s, h, w]` (OpenGait's `SetBlockWrapper`)."""

    def __init__(self, forward_block: nn.Module) -> None:
        super().__init__()
        self.forward_block = forward_block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s, h, w = x.shape
        y = self.forward_block(x.transpose(1, 2).reshape(n * s, c, h, w))
        return y.reshape(n, s, *y.shape[1:]).transpose(1, 2).contiguous()


class SeparateFCs(nn.Module):
    """Part-wise linear maps: `[n, c_in, p] -> [n, c_out, p]`, parameter `fc_bin [p, in, out]`."""

    def __init__(self, cfg: SeparateFCsConfig) -> None:
        super().__init__()
        self.fc_bin = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(cfg.parts_num, cfg.in_channels, cfg.out_channels))
        )
        self.norm = cfg.norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = F.normalize(self.fc_bin, dim=1) if self.norm else self.fc_bin
        return torch.bmm(x.permute(2, 0, 1), weight).permute(1, 2, 0).contiguous()


class SeparateBNNecks(nn.Module):
    """BNNeck + cosine classifier per part; only training uses it (identity logits)."""

    def __init__(self, cfg: SeparateBNNecksConfig) -> None:
        super().__init__()
        self.fc_bin = nn.Parameter(
            nn.init.xavier_uniform_(torch.empty(cfg.parts_num, cfg.in_channels, cfg.class_num))
        )
        self.bn1d: nn.Module
        if cfg.parallel_bn1d:
            self.bn1d = nn.BatchNorm1d(cfg.in_channels * cfg.parts_num)
        else:
            self.bn1d = nn.ModuleList(nn.BatchNorm1d(cfg.in_channels) for _ in range(cfg.parts_num))
        self.norm = cfg.norm

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[n, c, p]` -> (BN'd features `[n, c, p]`, logits `[n, class_num, p]`)."""
        n, c, p = x.shape
        if isinstance(self.bn1d, nn.ModuleList):
            x = torch.stack([bn(x[:, :, i]) for i, bn in enumerate(self.bn1d)], dim=2)
        else:
            x = self.bn1d(x.reshape(n, c * p)).reshape(n, c, p)
        feature = x.permute(2, 0, 1)  # [p, n, c]
        weight = self.fc_bin
        if self.norm:
            feature, weight = F.normalize(feature, dim=-1), F.normalize(weight, dim=1)
        logits = torch.bmm(feature, weight)
        return feature.permute(1, 2, 0).contiguous(), logits.permute(1, 2, 0).contiguous()


def horizontal_pooling(x: torch.Tensor, bin_num: Sequence[int]) -> torch.Tensor:
    """`[n, c, h, w] -> [n, c, sum(bin_num)]`: mean + max over each horizontal strip.

    Strips keep the body's vertical layout (head, torso, legs), which is what makes gait
    features discriminative; mean and max together keep both shape and extremities.
    """
    n, c = x.shape[:2]
    parts = []
    for bins in bin_num:
        z = x.reshape(n, c, bins, -1)
        parts.append(z.mean(-1) + z.amax(-1))
    return torch.cat(parts, dim=-1)


def temporal_max(x: torch.Tensor, seq_lengths: Sequence[int] | None) -> torch.Tensor:
    """`[n, c, s, h, w] -> [k, c, h, w]`: max over each sequence's frames.

    Without lengths each row is one sequence (k = n); with lengths the single row holds
    k sequences back to back (OpenGait's packed `all_ordered` batches), pooled separately.
    Max is order-free, so a sequence of any length gives one fixed-size template.
    """
    if seq_lengths is None:
        return x.amax(dim=2)
    return torch.cat([chunk.amax(dim=2) for chunk in x.split(list(seq_lengths), dim=2)])


def _as_lengths(seq_lengths: Sequence[int] | torch.Tensor | None, frames: int) -> list[int] | None:
    if seq_lengths is None:
        return None
    if isinstance(seq_lengths, torch.Tensor):
        lengths = [int(v) for v in seq_lengths.reshape(-1).tolist()]
    else:
        lengths = [int(v) for v in seq_lengths]
    if not lengths or min(lengths) < 1 or sum(lengths) != frames:
        raise ValueError(
            f"seq_lengths {lengths} must be positive and sum to the {frames} packed frames"
        )
    return lengths


class GaitBase(nn.Module):
    """OpenGait's GaitBase inference graph; `forward` gives the evaluator's embeddings."""

    def __init__(self, cfg: GaitBaseConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # Registration order = OpenGait's state_dict order (Backbone, FCs, BNNecks).
        self.Backbone = SetBlock(ResNet9(cfg.backbone))
        self.FCs = SeparateFCs(cfg.separate_fcs)
        self.BNNecks = SeparateBNNecks(cfg.separate_bnnecks)

    def pooled_feature_map(
        self, sils: torch.Tensor, seq_lengths: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Backbone then temporal max: `[k, 512, 16, 11]` for 64x44 silhouettes."""
        if sils.dim() == 3:  # [S, h, w]: one packed row
            sils = sils.unsqueeze(0)
        if sils.dim() != 4:
            raise ValueError(f"silhouettes must be [n, s, h, w], got {tuple(sils.shape)}")
        lengths = _as_lengths(seq_lengths, sils.shape[1])
        if lengths is not None and sils.shape[0] != 1:
            raise ValueError("packed silhouettes (with seq_lengths) must be [1, S, h, w]")
        feature_maps = self.Backbone(sils.unsqueeze(1))  # [n, c, s, h', w']
        return temporal_max(feature_maps, lengths)

    def part_features(
        self, sils: torch.Tensor, seq_lengths: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Horizontal pooling of the pooled map: `[k, 512, parts]` (OpenGait's HPP output)."""
        return horizontal_pooling(self.pooled_feature_map(sils, seq_lengths), self.cfg.bin_num)

    def forward(
        self, sils: torch.Tensor, seq_lengths: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Silhouettes in 0..1 -> embeddings `[k, 256, parts]` (`inference_feat`)."""
        return self.FCs(self.part_features(sils, seq_lengths))

    def bnneck_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Training logits `[k, class_num, parts]`; used here only to check the head's weights."""
        return self.BNNecks(embeddings)[1]


def build_gaitbase(config: GaitBaseConfig = GAITBASE_CASIAB) -> GaitBase:
    """A GaitBase in eval mode (BatchNorm uses its running statistics, as at inference)."""
    return GaitBase(config).eval()


# -- distance ------------------------------------------------------------------------------


@overload
def gait_distance(
    probe: np.ndarray, gallery: np.ndarray, metric: Literal["euc", "cos"] = "euc"
) -> np.ndarray: ...
@overload
def gait_distance(
    probe: torch.Tensor, gallery: torch.Tensor, metric: Literal["euc", "cos"] = "euc"
) -> torch.Tensor: ...
def gait_distance(probe: Any, gallery: Any, metric: Literal["euc", "cos"] = "euc") -> Any:
    """OpenGait evaluator's distance between `[n, c, p]` and `[m, c, p]` embeddings: `[n, m]`.

    `euc` (GaitBase's metric): Euclidean distance per part, averaged over parts, computed as
    sqrt(relu(|x|^2 + |y|^2 - 2 x.y)) like `cuda_dist`, so rankings match the published ones.
    `cos`: 1 - mean over parts of the per-part cosine similarity. Smaller is more similar.
    Numpy in, numpy out; tensors in, tensors out.
    """
    as_numpy = isinstance(probe, np.ndarray)
    x = torch.as_tensor(probe)
    if not x.is_floating_point():
        x = x.float()
    y = torch.as_tensor(gallery).to(x)
    if x.dim() != 3 or y.dim() != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"embeddings must be [n, c, p] alike, got {x.shape} and {y.shape}")
    x, y = x.permute(2, 0, 1), y.permute(2, 0, 1)  # [p, n, c]
    if metric == "cos":
        x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
        dist = 1.0 - torch.bmm(x, y.transpose(1, 2)).mean(0)
    elif metric == "euc":
        squared = (
            x.square().sum(-1).unsqueeze(2)
            + y.square().sum(-1).unsqueeze(1)
            - 2.0 * torch.bmm(x, y.transpose(1, 2))
        )
        dist = F.relu(squared).sqrt().mean(0)
    else:
        raise ValueError(f"unknown metric {metric!r}; use 'euc' or 'cos'")
    return dist.numpy() if as_numpy else dist


# -- official checkpoints ------------------------------------------------------------------

_UNREADABLE = (RuntimeError, pickle.UnpicklingError, EOFError, OSError, zipfile.BadZipFile)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def read_opengait_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `model` state_dict of an OpenGait `.pt`, read without unpickling arbitrary code."""
    path = Path(path)
    if not path.is_file():
        raise ModelMissingError(
            f"GaitBase checkpoint {path} does not exist; add the official OpenGait file with "
            "`biofuse models add gaitbase-casiab PATH`"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except _UNREADABLE as exc:
        raise ModelMissingError(
            f"{path} is not a readable OpenGait checkpoint (truncated, not a torch file, or "
            f"holding non-tensor objects): {_first_line(exc)}. Re-download the official .pt "
            "and add it again"
        ) from exc
    state = checkpoint.get("model") if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelMissingError(
            f"{path} has no 'model' state_dict; expected an OpenGait training checkpoint "
            "{'model': ..., 'optimizer': ..., 'scheduler': ..., 'iteration': ...}"
        )
    return dict(state)


def load_gaitbase(path: Path, config: GaitBaseConfig = GAITBASE_CASIAB) -> GaitBase:
    """GaitBase with official weights, strictly: every key present, none extra, shapes equal."""
    model = build_gaitbase(config)
    state = read_opengait_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelMissingError(
            f"{path} does not fit GaitBase ({len(missing)} keys missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}); is it a GaitBase "
            "(Baseline + ResNet9) checkpoint for this config?"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # shape mismatches, e.g. another dataset's class_num
        raise ModelMissingError(f"{path} does not fit this GaitBase config: {exc}") from exc
    return model.eval()


def install_for_registry(source: Path, target: Path, spec: ModelSpec) -> dict[str, str]:
    """`biofuse models add gaitbase-casiab FILE`: a copy of FILE loaded strictly into GaitBase
    (tensors only, every key and shape), then installed as it is in one rename; no config file
    is read (the architecture is `GAITBASE_CASIAB`, data in our code; no OpenGait yaml)."""
    install_file(Path(source), Path(target), lambda copy: load_gaitbase(copy, GAITBASE_CASIAB))
    return {"source_format": "OpenGait checkpoint {'model': state_dict} (GaitBase, CASIA-B)"}
