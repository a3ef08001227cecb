"""AdaFace IR-18/50/101 face embedder: our own inference graph for the official checkpoints.

The graph is written here (no AdaFace code is vendored) but its modules carry exactly the
official `state_dict` names, shapes and registration order, so an official PyTorch-Lightning
`.ckpt` loads strictly once its `model.` prefix is stripped. Checkpoints are read with
`torch.load(..., weights_only=True)` and converted once to a plain weights file that the model
registry hashes; nothing is unpickled beyond tensors and plain containers.

AdaFace takes **BGR** chips (unlike InsightFace models), 112x112, scaled to [-1, 1]; its
feature norm is a face-quality signal, so the embedder reports it next to the unit vectors.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pickle
import shutil
import struct
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from biofuse.modalities.base import Embeddings, l2_normalise
from torch import nn

from biofuse.errors import ModelMissingError
from biofuse.registry import ModelSpec, ResolvedModel

CHIP_SIZE = 112  # the backbone's input side; 4 stride-2 stages leave a 7x7 map
EMBEDDING_DIM = 512
STAGE_CHANNELS = (64, 128, 256, 512)
# Units per stage. The official `ir_101` is built with num_layers=100; we name it by its release.
STAGE_UNITS: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    50: (3, 4, 14, 3),
    101: (3, 13, 30, 3),
}
CHECKPOINT_PREFIX = "model."  # Lightning stores the backbone as the module attribute `model`
SAFETENSORS_AVAILABLE = importlib.util.find_spec("safetensors") is not None
_TORCH_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
# What parsing a damaged or foreign file can raise (the weights-only unpickler surfaces
# IndexError / TypeError on garbage). Anything else is a bug and should propagate.
_READ_ERRORS = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    LookupError,
    TypeError,
    AttributeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    struct.error,
)


# -- the network --------------------------------------------------------------------------


class IRBlock(nn.Module):
    """Pre-activation IR unit: BN-conv-BN-PReLU-conv(stride)-BN plus a shortcut.

    `shortcut_layer` is registered before `res_layer` because that is the official key order.
    An identity shortcut is a 1x1 max-pool (no keys), which only subsamples when stride is 2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module
        if in_channels == out_channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRBackbone(nn.Module):
    """AdaFace's IR backbone. `forward` returns (unit embedding [N,512], feature norm [N,1]).

    Attribute order is input_layer, output_layer, body: the official class assigns them in
    that order, which fixes the `state_dict` order that checkpoints and fixtures rely on.
    """

    def __init__(self, depth: int) -> None:
        super().__init__()
        if depth not in STAGE_UNITS:
            raise ValueError(f"AdaFace IR depth must be one of {sorted(STAGE_UNITS)}, got {depth}")
        self.depth = depth
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64)
        )
        final = STAGE_CHANNELS[-1]
        side = CHIP_SIZE // 2 ** len(STAGE_CHANNELS)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(final),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(final * side * side, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM, affine=False),
        )
        blocks: list[nn.Module] = []
        in_channels = STAGE_CHANNELS[0]
        for channels, units in zip(STAGE_CHANNELS, STAGE_UNITS[depth]):
            for unit in range(units):
                blocks.append(IRBlock(in_channels, channels, 2 if unit == 0 else 1))
                in_channels = channels
        self.body = nn.Sequential(*blocks)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d feature before normalisation; its length is AdaFace's quality proxy."""
        return self.output_layer(self.body(self.input_layer(x)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_norm(self.features(x))


def build_ir(depth: int) -> IRBackbone:
    """An AdaFace IR-18/50/101 graph in eval mode, with torch's default (untrained) weights."""
    return IRBackbone(depth).eval()


def split_norm(feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(feat / |feat|, |feat|) with the norm kept as an [N,1] column, as the official forward."""
    norm = torch.linalg.vector_norm(feat, ord=2, dim=1, keepdim=True)
    return feat / norm, norm


def fuse_flip(
    emb: torch.Tensor, norm: torch.Tensor, emb_flip: torch.Tensor, norm_flip: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """AdaFace's flip fusion: norm-weighted sum of both views, then re-normalised.

    Weighting by the norm lets the view the network is more sure of dominate; this is the
    protocol behind the published HQ accuracies (`fuse_features_with_norm`).
    """
    return split_norm(emb * norm + emb_flip * norm_flip)


def flip_fused(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `x` and its horizontal mirror and fuse them (the fixture's `flipfused_*`)."""
    emb, norm = model(x)
    emb_flip, norm_flip = model(torch.flip(x, dims=[3]))
    return fuse_flip(emb, norm, emb_flip, norm_flip)


def chips_to_input(chips_rgb: torch.Tensor) -> torch.Tensor:
    """Aligned RGB uint8 chips [N,112,112,3] to the model input: BGR, NCHW, (v/255-0.5)/0.5."""
    bgr = chips_rgb.permute(0, 3, 1, 2).flip(1)
    return (bgr.to(torch.float32) / 255.0 - 0.5) / 0.5


# -- weights ------------------------------------------------------------------------------


def _blocks_in(keys: Sequence[str]) -> int:
    return len({k.split(".")[1] for k in keys if k.startswith("body.")})


def _depth_from_keys(keys: Sequence[str]) -> int | None:
    """Which IR depth a set of backbone keys belongs to, judged by its number of units."""
    by_blocks = {sum(units): depth for depth, units in STAGE_UNITS.items()}
    return by_blocks.get(_blocks_in(keys))


def _load_into_graph(state: Mapping[str, torch.Tensor], depth: int, source: Path) -> IRBackbone:
    """Strictly load a backbone state dict, turning every mismatch into an actionable error."""
    model = build_ir(depth)
    expected = set(model.state_dict())
    found = set(state)
    missing, unexpected = sorted(expected - found), sorted(found - expected)
    if missing or unexpected:
        guess = _depth_from_keys(list(found))
        hint = (
            f"; the file looks like IR-{guess}: use depth={guess} (model adaface-ir{guess})"
            if guess is not None and guess != depth
            else ""
        )
        raise ModelMissingError(
            f"{source}: weights do not fit AdaFace IR-{depth}: {len(missing)} keys missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}){hint}"
        )
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as exc:  # shape mismatches
        raise ModelMissingError(
            f"{source}: weights do not fit AdaFace IR-{depth}: {exc}".strip()
        ) from exc
    return model.eval()


def _torch_load_tensors(path: Path, what: str) -> object:
    """`torch.load` restricted to tensors and plain containers, with readable failures."""
    if not path.is_file():
        raise ModelMissingError(f"{path} does not exist; expected {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = [line for line in str(exc).splitlines() if "GLOBAL" in line]
        if refused:
            raise ModelMissingError(
                f"{path} holds Python objects besides tensors, which safe loading refuses "
                f"({refused[0].strip()[:200]}). If the file is a trusted official release, "
                "re-save only its weights there: torch.save({'state_dict': "
                "torch.load(p, weights_only=False)['state_dict']}, out)"
            ) from exc
        raise ModelMissingError(_unreadable(path, what, exc)) from exc
    except _READ_ERRORS as exc:
        raise ModelMissingError(_unreadable(path, what, exc)) from exc


def _unreadable(path: Path, what: str, exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0][:200]
    return (
        f"{path} is not {what} ({type(exc).__name__}: {first_line}); it may be truncated or "
        "another kind of file: compare its size and sha256 with the official release"
    )


def read_adaface_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The backbone weights of an official Lightning `.ckpt`: `model.*` keys, prefix stripped.

    `head.*` (the margin head: kernel, t, batch statistics) is training-only and dropped.
    """
    path = Path(path)
    return _backbone_state(_torch_load_tensors(path, _CKPT_WHAT), path)


_CKPT_WHAT = "an AdaFace PyTorch-Lightning checkpoint (.ckpt)"


def _backbone_state(ckpt: object, path: Path) -> dict[str, torch.Tensor]:
    """`model.*` of a loaded Lightning checkpoint, prefix stripped; errors name the file."""
    what = _CKPT_WHAT
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        top = sorted(map(str, ckpt))[:8] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise ModelMissingError(
            f"{path} has no 'state_dict' (found {top}); expected {what}, such as "
            "adaface_ir50_ms1mv2.ckpt from the AdaFace README"
        )
    state = {
        k[len(CHECKPOINT_PREFIX) :]: v
        for k, v in ckpt["state_dict"].items()
        if isinstance(k, str) and k.startswith(CHECKPOINT_PREFIX)
    }
    if not state:
        raise ModelMissingError(
            f"{path}: 'state_dict' has no '{CHECKPOINT_PREFIX}*' backbone keys; expected {what}"
        )
    not_tensors = sorted(k for k, v in state.items() if not isinstance(v, torch.Tensor))
    if not_tensors:
        raise ModelMissingError(f"{path}: backbone entries are not tensors: {not_tensors[:3]}")
    return state


def load_adaface_checkpoint(path: Path, depth: int) -> IRBackbone:
    """An official AdaFace `.ckpt` loaded strictly into our IR graph (eval mode, CPU)."""
    path = Path(path)
    return _load_into_graph(read_adaface_checkpoint(path), depth, path)


def convert_checkpoint(ckpt: Path, out_safetensors: Path, depth: int) -> Path:
    """Check an official `.ckpt` against IR-`depth` and write its backbone as a weights file.

    Done once, before `biofuse models add`: the result holds tensors only, so every later
    load is safe and its sha256 names the model. Writes safetensors when the `safetensors`
    package is installed, else a `torch.save` of the plain state dict (same name; the loader
    tells them apart by content). The write is atomic, so a crash leaves no half file.
    """
    ckpt = Path(ckpt)
    return _write_weights(load_adaface_checkpoint(ckpt, depth), Path(out_safetensors))


def _write_weights(model: IRBackbone, out: Path) -> Path:
    """The loaded (hence validated) backbone's weights, written atomically."""
    depth = model.depth
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    try:
        if SAFETENSORS_AVAILABLE:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt", "arch": f"adaface-ir{depth}"})
        else:
            torch.save(state, tmp)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return out


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """safetensors starts with a little-endian u64 header length, then a JSON object."""
    if len(head) < 9:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    return 2 <= header_len <= size - 8 and head[8:9] == b"{"


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    what = "a safetensors weights file"
    if not SAFETENSORS_AVAILABLE:
        raise ModelMissingError(
            f"{path} is a safetensors file but the `safetensors` package is not installed; "
            "install it with `pip install safetensors`"
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, *_READ_ERRORS) as exc:
        raise ModelMissingError(_unreadable(path, what, exc)) from exc


def load_adaface_safetensors(path: Path, depth: int) -> IRBackbone:
    """Load weights written by `convert_checkpoint` (safetensors, or its torch.save fallback)."""
    path = Path(path)
    what = "AdaFace weights written by convert_checkpoint"
    if not path.is_file():
        raise ModelMissingError(f"{path} does not exist; expected {what}")
    with open(path, "rb") as handle:
        head = handle.read(16)
    size = path.stat().st_size
    if head.startswith(_TORCH_ZIP_MAGIC):
        state = _torch_load_tensors(path, what)
    elif _looks_like_safetensors(head, size):
        state = _read_safetensors(path)
    else:
        raise ModelMissingError(
            f"{path} is neither safetensors nor a torch weights file; expected {what}. "
            "Convert the official .ckpt with biofuse.modalities.face.adaface.convert_checkpoint"
        )
    if not isinstance(state, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelMissingError(f"{path} is not a flat name -> tensor dict; expected {what}")
    return _load_into_graph(state, depth, path)


def convert_for_registry(source: Path, target: Path, spec: ModelSpec) -> dict[str, str]:
    """`biofuse models add adaface-irN FILE`: install FILE as the spec's weights file.

    An official Lightning `.ckpt` is checked strictly against IR-N and converted (`model.`
    stripped, `head.*` dropped); a file `convert_checkpoint` already wrote is checked and
    copied. Returns the facts the registry records next to the sha256s.
    """
    depth = int(spec.extra["depth"])
    source, target = Path(source), Path(target)
    if not source.is_file():
        raise ModelMissingError(
            f"{source} is not a file; expected an AdaFace checkpoint such as "
            f"adaface_ir{depth}_webface4m.ckpt"
        )
    with open(source, "rb") as handle:
        head = handle.read(16)
    if _looks_like_safetensors(head, source.stat().st_size):
        _copy_checked(source, target, depth)
        return _facts(depth, "converted weights (safetensors)")
    if not head.startswith(_TORCH_ZIP_MAGIC):
        raise ModelMissingError(
            f"{source} is neither a PyTorch checkpoint (a zip archive) nor safetensors; "
            f"expected an AdaFace release file such as adaface_ir{depth}_webface4m.ckpt. "
            "Compare its size and sha256 with the official release"
        )
    loaded = _torch_load_tensors(source, _CKPT_WHAT)  # once: official files reach 1.5 GB
    if (
        isinstance(loaded, Mapping)
        and loaded
        and all(isinstance(v, torch.Tensor) for v in loaded.values())
    ):
        _copy_checked(source, target, depth)  # convert_checkpoint's torch.save fallback
        return _facts(depth, "converted weights (torch)")
    model = _load_into_graph(_backbone_state(loaded, source), depth, source)
    _write_weights(model, target)
    return _facts(depth, "lightning checkpoint")


def _copy_checked(source: Path, target: Path, depth: int) -> None:
    load_adaface_safetensors(source, depth)  # validates keys and shapes before installing
    tmp = target.with_name(target.name + ".partial")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _facts(depth: int, source_format: str) -> dict[str, str]:
    return {"arch": f"adaface-ir{depth}", "depth": str(depth), "source_format": source_format}


# -- the extractor ------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignedFace:
    """One face aligned to the ArcFace 112x112 template; `key` names its track/frame."""

    key: str
    chip_rgb_112: np.ndarray  # (112, 112, 3) uint8 RGB
    quality: float


MODEL_DEPTHS = {f"adaface-ir{depth}": depth for depth in STAGE_UNITS}


class AdaFaceEmbedder:
    """AdaFace IR as an Extractor: 512-d unit vectors, scored by cosine.

    `flip_tta` fuses each chip with its mirror (the protocol of the published accuracies) at
    twice the compute. `extra["feature_norm"]` is the unflipped chip's feature norm, AdaFace's
    quality signal, comparable whether or not flip fusion is on.
    """

    dim = EMBEDDING_DIM

    def __init__(
        self, model: ResolvedModel, depth: int, batch_size: int = 64, flip_tta: bool = True
    ) -> None:
        if depth not in STAGE_UNITS:
            raise ValueError(f"AdaFace IR depth must be one of {sorted(STAGE_UNITS)}, got {depth}")
        named = MODEL_DEPTHS.get(model.spec.name)
        if named is not None and named != depth:
            raise ValueError(f"model {model.spec.name!r} is IR-{named}, not IR-{depth}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.model = model
        self.name: str = model.spec.name
        self.depth = depth
        self.batch_size = batch_size
        self.flip_tta = flip_tta
        self._net: IRBackbone | None = None
        self._device = torch.device("cpu")

    @property
    def model_id(self) -> str:
        return self.model.model_id

    def prepare(self, device: str = "cpu") -> None:
        """Load the weights once; on CUDA, channels_last lets bf16 convolutions use tensor cores."""
        if self._net is not None:
            return
        net = load_adaface_safetensors(self.model.paths["weights"], self.depth)
        self._device = torch.device(device)
        if self._device.type == "cuda":
            net = net.to(self._device, memory_format=torch.channels_last)
        else:
            net = net.to(self._device)
        net.requires_grad_(False)
        self._net = net.eval()

    def _autocast(self) -> contextlib.AbstractContextManager[object]:
        if self._device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(embedding, unflipped norm, fused-or-plain norm) for one batch, in float32.

        Only the features run under autocast; normalising and fusing stay in float32.
        """
        assert self._net is not None
        views = torch.cat([x, torch.flip(x, dims=[3])]) if self.flip_tta else x
        if self._device.type == "cuda":
            views = views.contiguous(memory_format=torch.channels_last)
        with self._autocast():
            feat = self._net.features(views)
        emb, norm = split_norm(feat.float())
        if not self.flip_tta:
            return emb, norm, norm
        n = x.shape[0]
        fused, fused_norm = fuse_flip(emb[:n], norm[:n], emb[n:], norm[n:])
        return fused, norm[:n], fused_norm

    def _batches(self, chips: np.ndarray) -> Iterator[torch.Tensor]:
        for start in range(0, len(chips), self.batch_size):
            batch = torch.from_numpy(chips[start : start + self.batch_size])
            yield chips_to_input(batch.to(self._device, non_blocking=True))

    def embed(self, items: Sequence[AlignedFace]) -> Embeddings:
        """Unit embeddings for aligned RGB chips (converted to AdaFace's BGR here)."""
        if not items:
            return Embeddings.empty(self.dim, self.model_id)
        if self._net is None:
            self.prepare()
        for item in items:
            chip = item.chip_rgb_112
            if (
                not isinstance(chip, np.ndarray)
                or chip.dtype != np.uint8
                or chip.shape != (CHIP_SIZE, CHIP_SIZE, 3)
            ):
                raise ValueError(
                    f"chip {item.key!r} must be a ({CHIP_SIZE}, {CHIP_SIZE}, 3) uint8 RGB array "
                    f"aligned to the 112x112 ArcFace template, got "
                    f"{getattr(chip, 'shape', None)} {getattr(chip, 'dtype', type(chip))}"
                )
        chips = np.ascontiguousarray(np.stack([i.chip_rgb_112 for i in items]))
        vectors, norms, fused_norms = [], [], []
        with torch.inference_mode():
            for x in self._batches(chips):
                emb, norm, fused_norm = self._run(x)
                vectors.append(emb.cpu().numpy())
                norms.append(norm[:, 0].cpu().numpy())
                fused_norms.append(fused_norm[:, 0].cpu().numpy())
        extra: dict[str, np.ndarray] = {"feature_norm": np.concatenate(norms).astype(np.float32)}
        if self.flip_tta:
            extra["flipfused_norm"] = np.concatenate(fused_norms).astype(np.float32)
        return Embeddings(
            vectors=l2_normalise(np.concatenate(vectors)),
            quality=np.array([float(i.quality) for i in items], dtype=np.float32),
            keys=[i.key for i in items],
            model_id=self.model_id,
            extra=extra,
        )
