"""Seeded stand-ins for the registry models that ship no weights (tests only).

`seeded_state(module, seed)` fills every tensor of a torch module by one rule (distinct,
well-scaled values, non-trivial BatchNorm statistics); `RELEASES` writes, per model, a file in
the format its publisher releases, which `Registry.add` then checks and installs as a user's
file would be. A new user-added model registers its release writer here to be covered by the
registry contract test (tests/test_registry_contract.py); without one, its test is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch


def seeded_state(module: torch.nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """Every floating tensor of `module`'s state by one seeded rule; integer tensors as made."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if not value.is_floating_point():
            state[key] = value.clone()
        elif key.endswith("running_var"):
            state[key] = 0.5 + torch.rand(value.shape, generator=g)
        elif key.endswith("running_mean"):
            state[key] = 0.1 * torch.randn(value.shape, generator=g)
        elif value.ndim > 1:
            state[key] = torch.randn(value.shape, generator=g) / math.sqrt(value[0].numel())
        else:
            base = 1.0 if key.endswith("weight") else 0.0
            state[key] = base + 0.1 * torch.randn(value.shape, generator=g)
    return {k: v.contiguous() for k, v in state.items()}


def _adaface(depth: int) -> Callable[[Path], Path]:
    def write(folder: Path) -> Path:
        """The official release layout: Lightning metadata, `model.*` backbone, `head.*`."""
        from biofuse.modalities.face.adaface import build_ir

        state = {f"model.{k}": v for k, v in seeded_state(build_ir(depth)).items()}
        state["head.kernel"] = torch.randn(512, 10, generator=torch.Generator().manual_seed(1))
        path = folder / f"adaface_ir{depth}_seeded.ckpt"
        torch.save({"epoch": 1, "global_step": 1, "state_dict": state}, path)
        return path

    return write


def _gaitbase(folder: Path) -> Path:
    """An OpenGait checkpoint: {'model': state_dict, 'iteration': n}."""
    from biofuse.modalities.gait.gaitbase import GAITBASE_CASIAB, build_gaitbase

    path = folder / "GaitBase_DA-60000.pt"
    torch.save({"model": seeded_state(build_gaitbase(GAITBASE_CASIAB)), "iteration": 1}, path)
    return path


def _clip_student(folder: Path) -> Path:
    from biofuse.modalities.body.clip_student import BodyShapeStudent
    from safetensors.torch import save_file

    path = folder / "student.safetensors"
    save_file(seeded_state(BodyShapeStudent()), str(path))
    return path


def _ecapa(folder: Path) -> Path:
    """A SpeechBrain release folder made from seeded modules (test_ecapa's writer)."""
    import pytest

    pytest.importorskip("speechbrain")
    from test_ecapa import build_release

    release = folder / "spkrec-ecapa-voxceleb"
    build_release(release, seed=1)
    return release


def _deepgaitv2(folder: Path) -> Path:
    """An OpenGait checkpoint: {'model': state_dict, 'iteration': n}."""
    from biofuse.modalities.gait.deepgaitv2 import build_deepgaitv2

    path = folder / "DeepGaitV2-60000.pt"
    torch.save({"model": seeded_state(build_deepgaitv2()), "iteration": 1}, path)
    return path


def _kprpe(folder: Path) -> Path:
    """The Hugging Face release layout: model.safetensors with `model.*` keys."""
    from biofuse.modalities.face.kprpe import build_kprpe
    from safetensors.torch import save_file

    path = folder / "model.safetensors"
    state = {"model." + k: v for k, v in seeded_state(build_kprpe()).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path


RELEASES: dict[str, Callable[[Path], Path]] = {
    "adaface-ir18": _adaface(18),
    "adaface-ir50": _adaface(50),
    "adaface-ir101": _adaface(101),
    "gaitbase-casiab": _gaitbase,
    "clip3dreid-student-rn50": _clip_student,
    "ecapa-voxceleb": _ecapa,
    "deepgaitv2-casiab": _deepgaitv2,
    "kprpe-vit-base-webface4m": _kprpe,
}
