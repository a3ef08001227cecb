"""DeepGaitV2 (OpenGait `DeepGaitV2`, pseudo-3D mode): silhouette sequences -> part embeddings.

Our own implementation of the inference graph, checked against the official code by the seeded
parity fixture in tests/fixtures/deepgaitv2 (see tests/fixtures/README.md). Module attributes
carry OpenGait's names (`layer0.forward_block.*`, `layer2.0.shortcut3d`, `FCs.fc_bin`, ...), so an
official checkpoint's `model` state_dict loads with `strict=True`, nothing renamed.

The network: a 3x3 stem and one 2-D residual stage per frame, then three pseudo-3D stages whose
blocks add a temporal (3, 1, 1) convolution over neighbouring frames; max over frames, 16
horizontal strips (mean + max), one 512 -> 256 matrix per strip: `[n, 256, 16]` for 64x44
silhouettes, compared as GaitBase's (`gait_distance`, part-averaged Euclidean).

The temporal convolution sees neighbouring frames, so in OpenGait's packed form (`seq_lengths`)
the frames at a boundary see the next sequence's frames, as the official evaluator does; the
extractor runs each sequence on its own so an embedding never depends on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from biofuse.modalities.gait.gaitbase import (
    BasicBlock,  # the per-frame block (OpenGait BasicBlock2D): same layers and key names
    SeparateBNNecks,
    SeparateBNNecksConfig,
    SeparateFCs,
    SeparateFCsConfig,
    SetBlock,
    _as_lengths,
    horizontal_pooling,
    read_opengait_state_dict,
    temporal_max,
)
from torch import nn

from biofuse.errors import ModelMissingError
from biofuse.registry import ModelSpec


@dataclass(frozen=True)
class DeepGaitV2Config:
    """`model_cfg` of an OpenGait DeepGaitV2 YAML; defaults are `DeepGaitV2_casiab.yaml`."""

    mode: str = "p3d"
    in_channels: int = 1
    layers: tuple[int, ...] = (1, 1, 1, 1)
    channels: tuple[int, ...] = (64, 128, 256, 512)
    class_num: int = 74
    parts: int = 16

    def __post_init__(self) -> None:
        if self.mode != "p3d":
            raise ValueError(f"DeepGaitV2 mode {self.mode!r} is not implemented (only 'p3d')")
        if not len(self.layers) == len(self.channels) == 4 or min(self.layers) < 1:
            raise ValueError("DeepGaitV2 needs 4 stages of at least one block each")

    @property
    def embedding_shape(self) -> tuple[int, int]:
        return self.channels[2], self.parts


# The published configs (configs/deepgaitv2/*.yaml) differ in depth and training identities.
DEEPGAITV2_CONFIGS: dict[str, DeepGaitV2Config] = {
    "casiab": DeepGaitV2Config(),
    "ccpg": DeepGaitV2Config(class_num=100),
    "oumvlp": DeepGaitV2Config(class_num=5153),
    "sustech1k": DeepGaitV2Config(class_num=250),
    "gait3d": DeepGaitV2Config(layers=(1, 4, 4, 1), class_num=3000),
    "grew": DeepGaitV2Config(layers=(1, 4, 4, 1), class_num=20000),
}
DEEPGAITV2_CASIAB = DEEPGAITV2_CONFIGS["casiab"]


def _conv3x3(cin: int, cout: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class BlockP3D(nn.Module):
    """Pseudo-3D residual block (`BasicBlockP3D`) on `[n, c, s, h, w]`: a per-frame 3x3 conv,
    plus a (3, 1, 1) temporal conv over neighbouring frames on that output, then a second
    per-frame 3x3 conv; the shortcut is a strided 1x1x1 conv when the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.conv1 = SetBlock(
            nn.Sequential(_conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes), nn.ReLU())
        )
        self.conv2 = SetBlock(nn.Sequential(_conv3x3(planes, planes, 1), nn.BatchNorm2d(planes)))
        self.shortcut3d = nn.Conv3d(planes, planes, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.sbn = nn.BatchNorm3d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv3d(inplanes, planes, 1, (1, stride, stride), bias=False),
                nn.BatchNorm3d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.conv2(self.relu(out + self.sbn(self.shortcut3d(out))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class DeepGaitV2(nn.Module):
    """OpenGait's DeepGaitV2 (p3d) inference graph; `forward` gives the evaluator's embeddings."""

    def __init__(self, cfg: DeepGaitV2Config = DEEPGAITV2_CASIAB) -> None:
        super().__init__()
        self.cfg = cfg
        ch, layers = cfg.channels, cfg.layers
        strides = (1, 2, 2, 1)
        # Registration order = OpenGait's state_dict order.
        self.layer0 = SetBlock(
            nn.Sequential(_conv3x3(cfg.in_channels, ch[0], 1), nn.BatchNorm2d(ch[0]), nn.ReLU())
        )
        self.layer1 = SetBlock(
            nn.Sequential(
                BasicBlock(ch[0], ch[0], strides[0]),
                *(BasicBlock(ch[0], ch[0], 1) for _ in range(layers[0] - 1)),
            )
        )
        stages = []
        for i in (1, 2, 3):
            first = BlockP3D(ch[i - 1], ch[i], strides[i])
            stages.append(
                nn.Sequential(first, *(BlockP3D(ch[i], ch[i], 1) for _ in range(layers[i] - 1)))
            )
        self.layer2, self.layer3, self.layer4 = stages
        self.FCs = SeparateFCs(SeparateFCsConfig(ch[3], ch[2], cfg.parts))
        self.BNNecks = SeparateBNNecks(SeparateBNNecksConfig(cfg.class_num, ch[2], cfg.parts))

    def blocks(self, sils: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every stage's output `[n, c, s, h, w]` for `[n, s, h, w]` silhouettes (parity checks)."""
        outs = {}
        x = sils.unsqueeze(1)
        for name in ("layer0", "layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            outs[name] = x
        return outs

    def pooled_feature_map(
        self, sils: torch.Tensor, seq_lengths: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        if sils.dim() == 3:
            sils = sils.unsqueeze(0)
        if sils.dim() != 4 or sils.shape[-1] not in (44, 88):
            raise ValueError(f"silhouettes must be [n, s, h, 44|88], got {tuple(sils.shape)}")
        lengths = _as_lengths(seq_lengths, sils.shape[1])
        if lengths is not None and sils.shape[0] != 1:
            raise ValueError("packed silhouettes (with seq_lengths) must be [1, S, h, w]")
        return temporal_max(self.blocks(sils)["layer4"], lengths)

    def forward(
        self, sils: torch.Tensor, seq_lengths: Sequence[int] | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Silhouettes in 0..1 -> embeddings `[k, 256, 16]` (`inference_feat`, embed_1)."""
        feat = horizontal_pooling(self.pooled_feature_map(sils, seq_lengths), (self.cfg.parts,))
        return self.FCs(feat)

    def bnneck_logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.BNNecks(embeddings)[1]


def build_deepgaitv2(config: DeepGaitV2Config = DEEPGAITV2_CASIAB) -> DeepGaitV2:
    return DeepGaitV2(config).eval()


def load_deepgaitv2(path: Path, config: DeepGaitV2Config = DEEPGAITV2_CASIAB) -> DeepGaitV2:
    """DeepGaitV2 with an official OpenGait checkpoint, strictly (every key, every shape)."""
    model = build_deepgaitv2(config)
    path = Path(path)
    if path.is_file():
        with open(path, "rb") as handle:
            if handle.read(4) != b"PK\x03\x04":  # torch.save's zip container
                raise ModelMissingError(
                    f"{path} is not a PyTorch checkpoint (no zip container); expected the "
                    "official OpenGait DeepGaitV2 .pt, e.g. DeepGaitV2-60000.pt"
                )
    state = read_opengait_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise ModelMissingError(
            f"{path} does not fit DeepGaitV2 ({len(missing)} keys missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}); is it a DeepGaitV2 p3d "
            "checkpoint for this config (CASIA-B: layers 1,1,1,1)?"
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if state[k].shape != v.shape
    ]
    if wrong:
        raise ModelMissingError(f"{path} does not fit this DeepGaitV2 config: {wrong[:3]}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def install_for_registry(source: Path, target: Path, spec: ModelSpec) -> dict[str, str]:
    """`biofuse models add deepgaitv2-casiab FILE.pt`: the OpenGait checkpoint's `model`
    state_dict (read tensors-only) loaded strictly into DeepGaitV2, then written once as
    safetensors in one rename; the index records the source's and the installed file's sha256."""
    from safetensors.torch import save_file

    source = Path(source)
    model = load_deepgaitv2(source, DEEPGAITV2_CASIAB)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}

    def write(copy: Path) -> None:
        save_file(state, str(copy), metadata={"format": "pt", "source": "OpenGait DeepGaitV2"})
        load_deepgaitv2_safetensors(copy, DEEPGAITV2_CASIAB)

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        write(tmp)
        tmp.chmod(0o644)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"source_format": "OpenGait checkpoint {'model': state_dict} (DeepGaitV2 p3d, CASIA-B)"}


def load_deepgaitv2_safetensors(
    path: Path, config: DeepGaitV2Config = DEEPGAITV2_CASIAB
) -> DeepGaitV2:
    """The installed (converted) weights: safetensors, loaded strictly."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelMissingError(f"{path} is not a readable safetensors file: {exc}") from exc
    model = build_deepgaitv2(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelMissingError(f"{path} does not fit DeepGaitV2: {str(exc)[:300]}") from exc
    return model.eval()
