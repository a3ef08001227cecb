"""KP-RPE (CVLface `vit_kprpe`): a face ViT whose attention sees the five landmarks.

Our own implementation of the inference graph of "KeyPoint Relative Position Encoding for Face
Recognition" (Kim et al., CVPR 2024), checked against the official code by the seeded parity
fixture in tests/fixtures/kprpe (see tests/fixtures/README.md). Attribute names follow the
official `ViTKPRPEModel` (`net.blocks.N.attn.qkv`, `net.keypoint_linear`, ...), so the published
weights load with `strict=True` once the Hugging Face wrapper's `model.` prefix is dropped.

Input: an aligned 112x112 RGB chip, `(x / 255 - 0.5) / 0.5`, and its five landmarks (eyes, nose
tip, mouth corners) as (x, y) fractions of the chip, `[B, 5, 2]`. Output: `[B, 512]` (not
normalised; compare by cosine).

How the keypoints enter: for every 8x8 patch centre, the offsets to the five landmarks (10
numbers) go through one linear map to a table of 49 values per head and block; attention
logits between patches i and j get the table entry of i at the bucket of their 2-D offset
(iRPE's "product" bucketing, 7x7 buckets, contextual on keys).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from biofuse.modalities.base import Embeddings, l2_normalise
from torch import nn

from biofuse.errors import ModelMissingError
from biofuse.registry import ModelSpec, ResolvedModel

CHIP_SIZE = 112


@dataclass(frozen=True)
class KPRPEConfig:
    """`vit_kprpe` config; the defaults are `v1_base_kprpe_splithead_unshared.yaml` ('base')."""

    img_size: int = 112
    patch_size: int = 8
    embed_dim: int = 512
    depth: int = 24
    num_heads: int = 16
    mlp_ratio: float = 3.0
    output_dim: int = 512
    num_keypoints: int = 5
    rpe_ratio: float = 1.9  # iRPE's piecewise bucketing: alpha, beta, gamma = 1, 2, 8 x ratio

    @property
    def side(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_buckets(self) -> int:
        return (2 * int(2 * self.rpe_ratio) + 1) ** 2


KPRPE_CONFIGS = {
    "base": KPRPEConfig(),
    "small": KPRPEConfig(depth=12, num_heads=8, mlp_ratio=5.0),
}
KPRPE_BASE = KPRPE_CONFIGS["base"]


def _piecewise(rel: torch.Tensor, alpha: float, beta: float, gamma: float) -> torch.Tensor:
    """iRPE's piecewise index (Wu et al. 2021, eq. 18): exact within alpha, log-spaced beyond,
    saturating at beta; integer offsets in, integer bucket offsets out."""
    far = rel.abs() > alpha
    out = rel.clone()
    mag = rel[far].abs() / alpha
    logd = torch.log(mag) / math.log(gamma / alpha) * (beta - alpha)
    out[far] = (torch.sign(rel[far]) * (alpha + logd).round().clip(max=beta)).to(rel.dtype)
    return out


def product_buckets(side: int, ratio: float) -> torch.Tensor:
    """`[L, L]` bucket of each patch pair (L = side^2): row and column offsets bucketed apart,
    combined as r * (2 beta + 1) + c."""
    alpha, beta, gamma = 1 * ratio, 2 * ratio, 8 * ratio
    b = int(beta)
    cpu = torch.arange(side, device="cpu")  # built on the CPU even under a meta-device scope
    ii, jj = torch.meshgrid(cpu, cpu, indexing="ij")
    pos = torch.stack([ii, jj], -1).reshape(-1, 2)
    diff = pos[:, None, :] - pos[None, :, :]
    rows = _piecewise(diff[..., 0], alpha, beta, gamma) + b
    cols = _piecewise(diff[..., 1], alpha, beta, gamma) + b
    return rows * (2 * b + 1) + cols


def relative_keypoints(landmarks: torch.Tensor, side: int) -> torch.Tensor:
    """`[B, 5, 2]` landmarks (x, y in 0..1) -> `[B, side^2, 10]` offsets of each patch centre
    (row-major patches) to each landmark, (dx, dy) per landmark."""
    edges = torch.linspace(0, 1, side + 1, dtype=landmarks.dtype, device=landmarks.device)
    centres = (edges[:-1] + edges[1:]) / 2
    gy, gx = torch.meshgrid(centres, centres, indexing="ij")
    grid = torch.stack([gx, gy], -1).reshape(1, -1, 1, 2)
    return (grid - landmarks.unsqueeze(1)).flatten(2)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: KPRPEConfig) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.embed_dim, cfg.patch_size, cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    def __init__(self, cfg: KPRPEConfig) -> None:
        super().__init__()
        self.heads = cfg.num_heads
        self.scale = (cfg.embed_dim // cfg.num_heads) ** -0.5
        self.qkv = nn.Linear(cfg.embed_dim, 3 * cfg.embed_dim, bias=False)
        self.proj = nn.Linear(cfg.embed_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor, table: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        """`table` `[B, heads, L, buckets]`: this block's keypoint-conditioned encodings."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)
        logits = logits + torch.gather(table, 3, buckets.expand(b, self.heads, n, n))
        out = logits.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, cfg: KPRPEConfig) -> None:
        super().__init__()
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.embed_dim, hidden)
        self.act = nn.ReLU6()
        self.fc2 = nn.Linear(hidden, cfg.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg: KPRPEConfig) -> None:
        super().__init__()
        # registration order = the official state_dict order (norm1, norm2, attn, mlp)
        self.norm1 = nn.LayerNorm(cfg.embed_dim)
        self.norm2 = nn.LayerNorm(cfg.embed_dim)
        self.attn = Attention(cfg)
        self.mlp = Mlp(cfg)

    def forward(self, x: torch.Tensor, table: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), table, buckets)
        return x + self.mlp(self.norm2(x))


class ViTKPRPE(nn.Module):
    """The official `VisionTransformerWithKPRPE` at inference (no masking, no dropout)."""

    def __init__(self, cfg: KPRPEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        tokens = cfg.side**2
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim)
        self.feature = nn.Sequential(
            nn.Linear(cfg.embed_dim * tokens, cfg.embed_dim, bias=False),
            nn.BatchNorm1d(cfg.embed_dim, eps=2e-5),
            nn.Linear(cfg.embed_dim, cfg.output_dim, bias=False),
            nn.BatchNorm1d(cfg.output_dim, eps=2e-5),
        )
        width = cfg.num_buckets * cfg.num_heads * cfg.depth
        self.keypoint_linear = nn.Linear(2 * cfg.num_keypoints, width)
        self.register_buffer("buckets", product_buckets(cfg.side, cfg.rpe_ratio), persistent=False)

    def tables(self, landmarks: torch.Tensor) -> torch.Tensor:
        """`[B, depth * heads, L, buckets]`: block i uses rows i*heads .. (i+1)*heads - 1."""
        cfg = self.cfg
        rel = relative_keypoints(landmarks, cfg.side)
        out = self.keypoint_linear(rel)
        return out.view(len(rel), rel.shape[1], cfg.depth * cfg.num_heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, landmarks: torch.Tensor, keep: dict | None = None
    ) -> torch.Tensor:
        cfg = self.cfg
        if x.shape[1:] != (3, cfg.img_size, cfg.img_size):
            raise ValueError(f"expected [B, 3, {cfg.img_size}, {cfg.img_size}] chips")
        if landmarks.shape != (len(x), cfg.num_keypoints, 2):
            raise ValueError(f"expected [B, {cfg.num_keypoints}, 2] landmarks")
        tokens = self.patch_embed(x)
        h = tokens + self.pos_embed
        tables = self.tables(landmarks.to(h.dtype))
        buckets = self.buckets[None, None]
        if keep is not None:
            keep.update(patch_embed=tokens, tables=tables)
        for i, block in enumerate(self.blocks):
            h = block(h, tables[:, i * cfg.num_heads : (i + 1) * cfg.num_heads], buckets)
            if keep is not None:
                keep[f"block{i}"] = h
        h = self.norm(h)
        if keep is not None:
            keep["norm"] = h
        return self.feature(h.reshape(len(h), -1))


class KPRPEModel(nn.Module):
    """Holds the network as `net`, as the official `ViTKPRPEModel` does (keys `net.*`)."""

    def __init__(self, cfg: KPRPEConfig = KPRPE_BASE) -> None:
        super().__init__()
        self.net = ViTKPRPE(cfg)

    def forward(self, x: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        return self.net(x, landmarks)


def build_kprpe(cfg: KPRPEConfig = KPRPE_BASE) -> KPRPEModel:
    return KPRPEModel(cfg).eval()


def chips_to_input(chips_rgb_uint8: torch.Tensor) -> torch.Tensor:
    """`[B, 112, 112, 3]` uint8 RGB -> the network's `[B, 3, 112, 112]` in -1..1."""
    return chips_rgb_uint8.permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.5)


# -- official checkpoints ------------------------------------------------------------------

# The Hugging Face release (minchul/cvlface_adaface_vit_base_kprpe_webface4m, ..._webface12m)
# ships `model.safetensors` (the transformers wrapper: keys `model.net.*`) and
# `pretrained_model/model.pt` (torch.save of the model's state_dict: keys `net.*`).
_PREFIXES = ("model.net.", "net.")
_READ_ERRORS = (OSError, EOFError, RuntimeError, ValueError, LookupError, TypeError)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ModelMissingError(
            f"{path} does not exist; give the release's model.safetensors or "
            "pretrained_model/model.pt"
        )
    with open(path, "rb") as handle:
        head = handle.read(9)
    try:
        if head[:4] == b"PK\x03\x04":
            state = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                state = load_file(str(path), device="cpu")
            except SafetensorError as exc:
                raise ValueError(str(exc)) from exc
    except (*_READ_ERRORS, __import__("pickle").UnpicklingError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelMissingError(
            f"{path} is not a readable KP-RPE weights file ({type(exc).__name__}: {first}); "
            "expected the CVLface release's model.safetensors or pretrained_model/model.pt, "
            "whole: compare its size and sha256 with the release"
        ) from exc
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelMissingError(f"{path} holds no state_dict of tensors")
    return dict(state)


def official_to_ours(state: Mapping[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """Keys `model.net.*` (HF wrapper) or `net.*` (model.pt) -> ours (`net.*`); nothing else."""
    for prefix in _PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            return {"net." + k[len(prefix) :]: v for k, v in state.items()}
    sample = sorted(state)[:3]
    raise ModelMissingError(
        f"{path} is not a CVLface vit_kprpe release: its keys (e.g. {sample}) do not all start "
        f"with one of {_PREFIXES}"
    )


def load_kprpe_state(
    state: Mapping[str, torch.Tensor], path: Path, cfg: KPRPEConfig = KPRPE_BASE
) -> KPRPEModel:
    with torch.device("meta"):  # no random init of 115M weights that are replaced anyway
        model = build_kprpe(cfg)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        raise ModelMissingError(
            f"{path} does not fit KP-RPE ViT-base ({len(missing)} keys missing, e.g. "
            f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]}; shapes: "
            f"{wrong[:3]}); is it vit_kprpe base (v1_base_kprpe_splithead_unshared)?"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def load_kprpe(path: Path, cfg: KPRPEConfig = KPRPE_BASE) -> KPRPEModel:
    """An official release file or our converted safetensors, strictly."""
    return load_kprpe_state(official_to_ours(_read_state(path), Path(path)), Path(path), cfg)


def install_for_registry(source: Path, target: Path, spec: ModelSpec) -> dict[str, str]:
    """`biofuse models add kprpe-vit-base-webface4m FILE`: the release's `model.safetensors`
    (or `pretrained_model/model.pt`), read tensors-only, checked strictly (every key, every
    shape), written once as safetensors with keys `net.*`, installed in one rename."""
    from safetensors.torch import save_file

    source, target = Path(source), Path(target)
    raw = _read_state(source)
    prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in raw)), "?")
    model = load_kprpe_state(official_to_ours(raw, source), source)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    try:
        save_file(state, str(tmp), metadata={"format": "pt", "arch": "cvlface vit_kprpe base"})
        load_kprpe(tmp)  # what is installed reads back strictly
        tmp.chmod(0o644)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return {"source_format": f"CVLface vit_kprpe base state_dict (keys {prefix}*)"}


# -- extractor -----------------------------------------------------------------------------


def chip_landmarks(points5: np.ndarray, size: int = CHIP_SIZE) -> np.ndarray:
    """The five frame landmarks (x, y pixels) where `align.align_face` puts them on its chip,
    as fractions of the chip side: KP-RPE's keypoint input."""
    from biofuse.modalities.face.align import (
        ARCFACE_TEMPLATE_112,
        apply_transform,
        similarity_transform,
    )

    matrix = similarity_transform(
        np.asarray(points5, np.float64), ARCFACE_TEMPLATE_112 * size / 112
    )
    return (apply_transform(matrix, points5) / size).astype(np.float32)


@dataclass(frozen=True)
class KeypointFace:
    """One aligned 112x112 RGB chip and its five landmarks on that chip (x, y in 0..1)."""

    key: str
    chip_rgb_112: np.ndarray
    landmarks: np.ndarray  # (5, 2) float
    quality: float


class KPRPEEmbedder:
    """KP-RPE as an Extractor: 512-d unit vectors (cosine); `extra["feature_norm"]` is the
    raw embedding's norm (AdaFace-trained, so it tracks quality as AdaFace's does)."""

    dim = 512

    def __init__(self, model: ResolvedModel, batch_size: int = 32) -> None:
        self.model = model
        self.batch_size = batch_size
        self._net: KPRPEModel | None = None
        self._device = torch.device("cpu")

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def prepare(self, device: str = "cpu") -> None:
        if self._net is None:
            self._device = torch.device(device)
            self._net = load_kprpe(self.model.paths["weights"]).to(self._device).eval()

    def embed(self, items: Sequence[KeypointFace]) -> Embeddings:
        if not items:
            return Embeddings.empty(self.dim, self.model_id)
        self.prepare(str(self._device))
        assert self._net is not None
        for item in items:
            if (
                item.chip_rgb_112.shape != (CHIP_SIZE, CHIP_SIZE, 3)
                or item.chip_rgb_112.dtype != np.uint8
            ):
                raise ValueError(f"chip {item.key!r} must be a (112, 112, 3) uint8 RGB array")
            if np.shape(item.landmarks) != (5, 2):
                raise ValueError(f"face {item.key!r} needs (5, 2) landmarks on the chip")
        rows = []
        with torch.inference_mode():
            for start in range(0, len(items), self.batch_size):
                batch = items[start : start + self.batch_size]
                chips = torch.from_numpy(np.stack([i.chip_rgb_112 for i in batch]))
                marks = torch.from_numpy(np.stack([i.landmarks for i in batch]).astype(np.float32))
                rows.append(
                    self._net(chips_to_input(chips).to(self._device), marks.to(self._device))
                )
        raw = torch.cat(rows).float().cpu().numpy()
        return Embeddings(
            vectors=l2_normalise(raw),
            quality=np.array([float(i.quality) for i in items], np.float32),
            keys=[i.key for i in items],
            model_id=self.model_id,
            extra={"feature_norm": np.linalg.norm(raw, axis=1).astype(np.float32)},
        )
