"""The CLIP-distilled body-shape student's inference path with seeded weights.

No trained student ships offline, so these tests prove the plumbing: a checkpoint of the right
architecture loads strictly through the registry (safetensors or a torch state dict), the output
is a deterministic unit 512-d vector per crop, and wrong or unsafe files fail with a clear error.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from biofuse.modalities.body.clip_student import (
    EMBEDDING_DIM,
    BodyShapeStudent,
    ClipStudentBodyExtractor,
    PersonCrops,
    load_student,
    preprocess,
    read_state_dict,
)
from safetensors.torch import save_file

from biofuse.config import Settings
from biofuse.errors import ModelMissingError
from biofuse.registry import Registry

NAME = "clip3dreid-student-rn50"


@pytest.fixture(scope="module")
def seeded_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = BodyShapeStudent()
    with torch.no_grad():  # non-trivial BN statistics, so eval-mode BN is exercised
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 1.5)
            elif name.endswith("running_mean"):
                tensor.normal_(0, 0.1)
    return {k: v.clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def safetensors_file(tmp_path_factory: pytest.TempPathFactory, seeded_state) -> Path:
    path = tmp_path_factory.mktemp("student") / "student.safetensors"
    save_file(seeded_state, str(path))
    return path


@pytest.fixture(scope="module")
def crops() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(180, 70), (96, 40)]]


@pytest.mark.slow
def test_architecture_is_resnet50_with_torchvision_names(seeded_state) -> None:
    assert seeded_state["encoder.conv1.weight"].shape == (64, 3, 7, 7)
    assert seeded_state["encoder.layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    assert seeded_state["encoder.layer2.0.downsample.0.weight"].shape == (512, 256, 1, 1)
    assert seeded_state["sv_fc.weight"].shape == (EMBEDDING_DIM, 2048)
    assert "encoder.layer3.5.bn3.running_var" in seeded_state
    assert "encoder.layer3.6.conv1.weight" not in seeded_state  # 3-4-6-3 blocks
    n_params = sum(v.numel() for k, v in seeded_state.items() if "running" not in k)
    assert 24_500_000 < n_params < 25_000_000  # ResNet-50 trunk (23.5 M) + 2048x512 projection


def test_preprocess_resizes_and_normalises(crops: list[np.ndarray]) -> None:
    x = preprocess(crops)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    white = preprocess([np.full((10, 10, 3), 255, np.uint8)])
    np.testing.assert_allclose(
        white[0, :, 0, 0].numpy(), [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225]
    )


@pytest.mark.slow
def test_safetensors_and_torch_files_give_the_same_unit_embeddings(
    tmp_path: Path, safetensors_file: Path, seeded_state, crops: list[np.ndarray]
) -> None:
    pt_file = tmp_path / "student.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in seeded_state.items()}}, pt_file)
    a = load_student(safetensors_file)
    b = load_student(pt_file)
    with torch.inference_mode():
        ya, yb = a(preprocess(crops)), b(preprocess(crops))
        again = a(preprocess(crops))
    assert ya.shape == (2, EMBEDDING_DIM)
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)
    torch.testing.assert_close(ya, again, rtol=0, atol=0)  # deterministic
    torch.testing.assert_close(ya.norm(dim=1), torch.ones(2))
    assert float((ya[0] - ya[1]).abs().max()) > 1e-4  # different crops, different vectors


@pytest.mark.slow
def test_wrong_architecture_is_refused_with_the_keys_named(tmp_path: Path, seeded_state) -> None:
    missing = {k: v for k, v in seeded_state.items() if not k.startswith("sv_fc")}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelMissingError, match=r"2 missing keys.*sv_fc"):
        load_student(tmp_path / "missing.safetensors")
    resized = dict(seeded_state)
    resized["sv_fc.weight"] = torch.zeros(256, 2048)
    save_file(resized, str(tmp_path / "resized.safetensors"))
    with pytest.raises(ModelMissingError, match="wrong shapes.*sv_fc.weight"):
        load_student(tmp_path / "resized.safetensors")
    extra = dict(seeded_state, **{"classifier.weight": torch.zeros(632, 512)})
    save_file(extra, str(tmp_path / "extra.safetensors"))
    with pytest.raises(ModelMissingError, match="1 unexpected.*classifier.weight"):
        load_student(tmp_path / "extra.safetensors")


class Payload:
    """Stands for arbitrary code in a pickle: weights_only loading must refuse it."""


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_bad_files_fail_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ModelMissingError, match="cannot read body-shape student weights"):
        read_state_dict(garbage)
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"payload": Payload()}, unsafe)
    with pytest.raises(ModelMissingError, match="cannot read"):
        read_state_dict(unsafe)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ModelMissingError):
        read_state_dict(legacy)
    with pytest.raises(ModelMissingError, match="not found"):
        read_state_dict(tmp_path / "absent.pt")
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"epoch": 3}, not_tensors)
    with pytest.raises(ModelMissingError, match="no state dict of tensors"):
        read_state_dict(not_tensors)


@pytest.mark.slow
def test_extractor_through_the_registry(
    tmp_path: Path, safetensors_file: Path, crops: list[np.ndarray]
) -> None:
    settings = Settings(home=tmp_path, body_model=NAME)
    registry = Registry(settings.models_dir)
    with pytest.raises(ModelMissingError, match=f"biofuse models add {NAME}"):
        registry.resolve(NAME)
    registry.add(NAME, safetensors_file)

    from biofuse.flows.models import build_model

    body = build_model("body", settings)
    assert body.model_id.startswith(f"{NAME}-") and body.dim == EMBEDDING_DIM
    out = body.embed([PersonCrops("t1", crops), PersonCrops("t2", crops[:1]), PersonCrops("x", [])])
    assert out.keys == ["t1", "t2"] and out.vectors.shape == (2, EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(out.vectors, axis=1), 1.0, rtol=1e-5)
    # One crop: the track vector is that crop's vector, with full agreement (quality 1).
    single = ClipStudentBodyExtractor(registry.resolve(NAME))
    np.testing.assert_allclose(out.vectors[1], single.embed_crops(crops[:1])[0], atol=1e-5)
    assert out.quality[1] == pytest.approx(1.0, abs=1e-5) and 0 < out.quality[0] < 1
