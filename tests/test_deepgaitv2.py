"""DeepGaitV2 (p3d, CASIA-B): parity with the official OpenGait code, strict keys, installer.

The fixture (tests/fixtures/deepgaitv2, made by its make_fixture.py from the official code, see
tests/fixtures/README.md) records the official state_dict as [key, shape, branch, seed]; we rebuild
those weights with the shared rule and compare outputs and per-block intermediates.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from biofuse.modalities.gait.deepgaitv2 import (
    DEEPGAITV2_CASIAB,
    DEEPGAITV2_CONFIGS,
    build_deepgaitv2,
    load_deepgaitv2,
    load_deepgaitv2_safetensors,
)
from biofuse.modalities.gait.gaitbase import gait_distance, horizontal_pooling, temporal_max
from conftest import seeded_tensor

from biofuse.errors import ModelMissingError
from biofuse.registry import Registry

FIXTURE = Path(__file__).parent / "fixtures" / "deepgaitv2"
TOL = 1e-5


@pytest.fixture(scope="module")
def keys() -> list[list]:
    return json.loads((FIXTURE / "keys.json").read_text())


@pytest.fixture(scope="module")
def official_state(keys: list[list]) -> dict[str, torch.Tensor]:
    template = build_deepgaitv2().state_dict()
    state = {}
    for key, shape, branch, seed in keys:
        value = seeded_tensor(shape, branch, seed)
        state[key] = template[key].clone() if value is None else value
    return state


@pytest.fixture(scope="module")
def model(official_state: dict[str, torch.Tensor]):
    net = build_deepgaitv2()
    net.load_state_dict(official_state, strict=True)
    return net


@pytest.fixture(scope="module")
def data() -> tuple[dict, dict, dict]:
    load = lambda name: dict(np.load(FIXTURE / name))  # noqa: E731
    return load("input.npz"), load("expected.npz"), load("intermediates.npz")


def test_official_keys_order_and_shapes(keys: list[list]) -> None:
    ours = build_deepgaitv2().state_dict()
    assert [k for k, *_ in keys] == list(ours)  # same names, same order
    assert all(list(ours[k].shape) == shape for k, shape, *_ in keys)


def test_parity_outputs_and_blocks(model, data) -> None:
    inputs, expected, inter = data
    sils = torch.from_numpy(inputs["silhouettes"].astype(np.float32))
    batch = torch.stack([sils[i:j] for i, j in inputs["batch_frames"]])
    errors = {}
    with torch.no_grad():
        blocks = model.blocks(batch)
        for name, out in blocks.items():
            step = max(1, out.shape[1] // 16)
            window = out[:, ::step, :2, :8, :8].numpy()
            errors[f"{name}_window"] = np.abs(window - inter[f"{name}_window"]).max()
            chmean = out.mean(dim=(2, 3, 4)).numpy()
            errors[f"{name}_chmean"] = np.abs(chmean - inter[f"{name}_chmean"]).max()
        pooled = temporal_max(blocks["layer4"], None)
        errors["TP"] = np.abs(pooled.mean(dim=(2, 3)).numpy() - inter["TP_out_chmean"]).max()
        hpp = horizontal_pooling(pooled, (16,))
        errors["HPP"] = np.abs(hpp.numpy() - inter["HPP_out"]).max()
        emb = model(batch)
        errors["embeddings"] = np.abs(emb.numpy() - expected["embeddings"]).max()
        errors["logits"] = np.abs(model.bnneck_logits(emb).numpy() - expected["logits"]).max()
        packed = model(sils[None], [int(v) for v in inputs["lengths"]])
        errors["packed"] = np.abs(packed.numpy() - expected["packed_embeddings"]).max()
    assert max(errors.values()) <= TOL, errors
    assert emb.shape == (2, 256, 16) and float(expected["embeddings"].std()) > 0.1


def test_scores_like_gaitbase(model, data) -> None:
    inputs, expected, _ = data
    dist = gait_distance(expected["embeddings"], expected["embeddings"])
    assert dist.shape == (2, 2) and np.allclose(np.diag(dist), 0, atol=1e-2) and dist[0, 1] > 0


def test_configs() -> None:
    assert DEEPGAITV2_CASIAB.embedding_shape == (256, 16)
    grew = build_deepgaitv2(DEEPGAITV2_CONFIGS["grew"]).state_dict()
    assert "layer2.3.shortcut3d.weight" in grew and grew["BNNecks.fc_bin"].shape[-1] == 20000


# -- installer ------------------------------------------------------------------------------


def _checkpoint(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": state, "optimizer": {}, "scheduler": {}, "iteration": 60000}, path)
    return path


def test_registry_add_converts_official_checkpoint(tmp_path: Path, official_state, data) -> None:
    source = _checkpoint(tmp_path / "DeepGaitV2-60000.pt", official_state)
    registry = Registry(tmp_path / "models")
    resolved = registry.add("deepgaitv2-casiab", source, training_set="CASIA-B")
    record = registry.record("deepgaitv2-casiab")
    assert resolved.paths["weights"].suffix == ".safetensors"
    assert record["source_sha256"] != record["sha256"] and len(record["sha256"]) == 64
    net = load_deepgaitv2_safetensors(resolved.paths["weights"])
    inputs, expected, _ = data
    sils = torch.from_numpy(inputs["silhouettes"].astype(np.float32))
    batch = torch.stack([sils[i:j] for i, j in inputs["batch_frames"]])
    with torch.no_grad():
        assert np.abs(net(batch).numpy() - expected["embeddings"]).max() <= TOL
    assert registry.verify("deepgaitv2-casiab").sha256 == record["sha256"]


@pytest.mark.parametrize("case", ["random", "truncated", "gaitbase_keys", "wrong_shape"])
def test_registry_add_refuses_wrong_files(tmp_path: Path, official_state, case: str) -> None:
    source = tmp_path / "bad.pt"
    if case == "random":
        source.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        whole = _checkpoint(tmp_path / "whole.pt", official_state).read_bytes()
        source.write_bytes(whole[: len(whole) // 2])
    elif case == "gaitbase_keys":
        state = dict(official_state)
        state.pop("layer2.0.shortcut3d.weight")
        _checkpoint(source, state)
    else:
        state = dict(official_state)
        state["BNNecks.fc_bin"] = torch.zeros(16, 256, 75)
        _checkpoint(source, state)
    registry = Registry(tmp_path / "models")
    with pytest.raises(ModelMissingError) as err:
        registry.add("deepgaitv2-casiab", source)
    assert str(source) in str(err.value)
    assert "weights_only" not in str(err.value)  # no advice to unpickle an unknown file
    assert not (tmp_path / "models" / "deepgaitv2-casiab").exists()
    assert registry.record("deepgaitv2-casiab") == {}


def test_load_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ModelMissingError):
        load_deepgaitv2(tmp_path / "absent.pt")


# -- wiring ---------------------------------------------------------------------------------


def test_gait_path_runs_deepgaitv2_and_scores_part_euclidean(
    tmp_path: Path, official_state, data
) -> None:
    from biofuse.flows.models import build_model
    from biofuse.fusion.scores import metric_for_model
    from biofuse.modalities.items import SilhouetteSequence

    from biofuse.config import Settings

    source = _checkpoint(tmp_path / "DeepGaitV2-60000.pt", official_state)
    Registry(tmp_path / "models").add("deepgaitv2-casiab", source)
    model = build_model("gait", Settings(home=tmp_path, gait_model="deepgaitv2-casiab"))
    inputs, expected, _ = data
    sils = inputs["silhouettes"]  # 64x44 chips: pad back to the pretreated 64x64 (10 each side)
    square = np.pad(sils, ((0, 0), (0, 0), (10, 10))) * 255
    items = [
        SilhouetteSequence(f"s{k}", square[i:j]) for k, (i, j) in enumerate(inputs["batch_frames"])
    ]
    rows = model.embed(items)
    assert rows.vectors.shape == (2, 256 * 16)
    # each sequence on its own, as the batch's rows: equal to the official batch embeddings
    np.testing.assert_allclose(rows.vectors, expected["embeddings"].reshape(2, -1), atol=TOL)
    assert metric_for_model(rows.model_id) == "gait-euclidean"


def test_deepgaitv2_without_weights_says_how_to_add_them(tmp_path: Path) -> None:
    from biofuse.flows.models import build_model

    from biofuse.config import Settings

    with pytest.raises(ModelMissingError, match="models add deepgaitv2-casiab"):
        build_model("gait", Settings(home=tmp_path, gait_model="deepgaitv2-casiab"))
