"""CLIP-distilled body-shape student (after CLIP3DReID): person crop -> unit body-shape vector.

CLIP3DReID (Liu et al., CVPR 2024; github.com/liufeng2915/Clip3DReid) distils a CLIP ViT-L/14
teacher into a small student image encoder whose pooled feature goes through one linear
projection (`sv_fc`, no BN at inference) to a 512-d embedding compared by cosine. Its released
student is a TinyViT-5M (576-d feature); its configs also name a ResNet variant. We implement
the ResNet-50 variant (bottleneck blocks 3-4-6-3, 2048-d global average pool) with
torchvision-compatible key names under `encoder.` plus `sv_fc.{weight,bias}`, so a checkpoint
trained with torchvision's ResNet-50 as the student loads key for key. Input: 224x224 RGB,
ImageNet normalisation (CLIP3DReID's data config: HEIGHT = WIDTH = 224).

No weights ship offline: the user adds a checkpoint (`biofuse models add
clip3dreid-student-rn50 FILE`), loaded with `torch.load(weights_only=True)` or safetensors and
strict key matching. torchvision does not import beside our torch build, hence our own backbone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from biofuse.modalities.base import Embeddings
from torch import nn

from biofuse.errors import ModelMissingError
from biofuse.registry import ModelSpec, ResolvedModel, install_file

INPUT_SIZE = (224, 224)  # height, width
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_DIM = 512  # CLIP3DReID's MODEL.FEATURE_DIM
RESNET50_BLOCKS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision's layout and names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNetEncoder(nn.Module):
    """ResNet-50 trunk to the globally pooled feature (no classifier head)."""

    def __init__(self, blocks: Sequence[int] = RESNET50_BLOCKS, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for i, count in enumerate(blocks):
            planes = width * 2**i
            layer = []
            for j in range(count):
                layer.append(Bottleneck(inplanes, planes, stride=2 if (j == 0 and i > 0) else 1))
                inplanes = planes * Bottleneck.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.out_dim = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)


class BodyShapeStudent(nn.Module):
    """Encoder + CLIP3DReID's `sv_fc` projection -> unit body-shape embedding."""

    def __init__(
        self,
        blocks: Sequence[int] = RESNET50_BLOCKS,
        width: int = 64,
        dim: int = EMBEDDING_DIM,
    ) -> None:
        super().__init__()
        self.encoder = ResNetEncoder(blocks, width)
        self.sv_fc = nn.Linear(self.encoder.out_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.sv_fc(self.encoder(x)), dim=1)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors or torch checkpoint, never unpickling arbitrary objects.

    Accepts a bare state dict or one wrapped as {"state_dict": ...} / {"model": ...}, and strips
    DataParallel's "module." prefix, the two forms training scripts save most often.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelMissingError(f"body-shape student weights not found at {path}")
    with path.open("rb") as handle:
        head = handle.read(8)
    try:
        if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":  # torch zip or legacy pickle
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            state = load_file(str(path))
    except Exception as exc:  # corrupt or foreign file: say which, and what to do
        raise ModelMissingError(
            f"cannot read body-shape student weights {path}: {exc}. Provide a safetensors file "
            "or a torch state dict saved with torch.save(model.state_dict(), PATH)"
        ) from exc
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in state and isinstance(state[wrapper], Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise ModelMissingError(f"{path} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_student(path: Path, **kwargs: int) -> BodyShapeStudent:
    """A student with every tensor from `path`: strict, so a wrong architecture fails here."""
    model = BodyShapeStudent(**kwargs)  # type: ignore[arg-type]
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ModelMissingError(
            f"{path} is not a ResNet-50 body-shape student ({len(missing)} missing keys, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; wrong shapes: "
            f"{wrong[:3]}). Expected `encoder.*` (torchvision ResNet-50 names) and `sv_fc.*`"
        )
    model.load_state_dict(state, strict=True)
    return model.eval()


def preprocess(crops: Sequence[np.ndarray]) -> torch.Tensor:
    """RGB uint8 person crops of any size -> (N, 3, 224, 224) normalised float tensor."""
    h, w = INPUT_SIZE
    batch = np.stack(
        [cv2.resize(np.asarray(c, np.uint8), (w, h), interpolation=cv2.INTER_LINEAR) for c in crops]
    ).astype(np.float32)
    batch = (batch / 255.0 - np.array(IMAGENET_MEAN, np.float32)) / np.array(
        IMAGENET_STD, np.float32
    )
    return torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))


@dataclass(frozen=True)
class PersonCrops:
    """A track's person crops (RGB uint8), embedded as the mean of their unit vectors."""

    key: str
    crops: Sequence[np.ndarray]


class ClipStudentBodyExtractor:
    """Extractor for a user-provided CLIP3DReID-style student (registry name below)."""

    name = "clip3dreid-student-rn50"
    dim = EMBEDDING_DIM

    def __init__(self, resolved: ResolvedModel, batch_size: int = 16) -> None:
        self.resolved = resolved
        self.batch_size = batch_size
        self.model: BodyShapeStudent | None = None
        self.device = "cpu"

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    def prepare(self, device: str = "cpu") -> None:
        self.device = device
        self.model = load_student(next(iter(self.resolved.paths.values()))).to(device)

    @torch.inference_mode()
    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        if self.model is None:
            self.prepare(self.device)
        assert self.model is not None
        out = [
            self.model(preprocess(crops[i : i + self.batch_size]).to(self.device)).cpu().numpy()
            for i in range(0, len(crops), self.batch_size)
        ]
        return np.concatenate(out).astype(np.float32)

    def embed(self, items: Sequence[PersonCrops]) -> Embeddings:
        rows, quality, keys = [], [], []
        for item in items:
            if not len(item.crops):
                continue
            vectors = self.embed_crops(item.crops)
            mean = vectors.mean(axis=0)
            norm = float(np.linalg.norm(mean))
            if norm <= 1e-6:
                continue
            rows.append(mean / norm)
            # The mean's length is how much the per-crop vectors agree (1 = all identical).
            quality.append(norm)
            keys.append(item.key)
        if not keys:
            return Embeddings.empty(self.dim, self.model_id)
        return Embeddings(
            np.stack(rows).astype(np.float32), np.asarray(quality, np.float32), keys, self.model_id
        )


def install_for_registry(source: Path, target: Path, spec: ModelSpec) -> dict[str, str]:
    """`biofuse models add clip3dreid-student-rn50 FILE`: a copy of FILE loaded strictly into
    the student (tensors only, every key and shape), then installed as it is in one rename."""
    install_file(Path(source), Path(target), load_student)
    return {"source_format": "body-shape student state dict (ResNet-50 + sv_fc)"}
