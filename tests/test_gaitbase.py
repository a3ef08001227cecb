"""GaitBase: parity with official OpenGait outputs, the evaluator's distance, safe checkpoints.

The parity fixture (../shared/fixtures/gaitbase_parity, see its README) holds the official
model's outputs for seeded weights; we replay the same weights into our implementation.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from biofuse.modalities.gait import (
    GAITBASE_CASIAB,
    GAITBASE_CONFIGS,
    GaitBase,
    GaitBaseConfig,
    ResNet9Config,
    base_sil_cutting,
    build_gaitbase,
    gait_distance,
    load_gaitbase,
)
from biofuse.modalities.gait.gaitbase import horizontal_pooling
from conftest import parity_fixture, seeded_tensor

from biofuse.errors import ModelMissingError

TOL = 1e-4  # the fixture README's acceptance threshold (fp32 vs fp64 differ by 5.5e-7)


@pytest.fixture(scope="module")
def parity_dir() -> Path:
    return parity_fixture("gaitbase_parity", "keys_gaitbase_casiab.json")


# -- the fixture's weight rule -------------------------------------------------------------


def rule_branch(key: str, tensor: torch.Tensor) -> str:
    """The README's branch for a key of our model (every 1-D `weight` here is a norm's)."""
    if key.endswith("running_var"):
        return "running_var"
    if key.endswith("num_batches_tracked"):
        return "skip"
    if key.endswith(("running_mean", "bias")):
        return "mean_or_bias"
    if key.endswith("weight") and tensor.dim() == 1:
        return "norm_weight"
    return "fanin_weight"


def seeded_state(model: GaitBase) -> dict[str, torch.Tensor]:
    """The rule applied to our own state_dict order: seeds 1000 + index."""
    state = model.state_dict()
    filled = {}
    for i, (key, tensor) in enumerate(state.items()):
        value = seeded_tensor(list(tensor.shape), rule_branch(key, tensor), 1000 + i)
        filled[key] = tensor.clone() if value is None else value
    return filled


@pytest.fixture(scope="module")
def official_keys(parity_dir: Path) -> list[list]:
    return json.loads((parity_dir / "keys_gaitbase_casiab.json").read_text())


@pytest.fixture(scope="module")
def replayed_state(official_keys: list[list]) -> dict[str, torch.Tensor]:
    """The fixture's weights, rebuilt from its recorded keys, shapes, branches and seeds."""
    template = build_gaitbase(GAITBASE_CASIAB).state_dict()
    state = {}
    for key, shape, branch, seed in official_keys:
        value = seeded_tensor(shape, branch, seed)
        state[key] = template[key].clone() if value is None else value
    return state


@pytest.fixture(scope="module")
def parity_run(parity_dir: Path, replayed_state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Our model on the fixture's packed input, every compared stage kept."""
    model = build_gaitbase(GAITBASE_CASIAB)
    model.load_state_dict(replayed_state, strict=True)
    sils = torch.from_numpy(np.load(parity_dir / "input.npy"))  # [2, 30, 64, 44]
    packed = sils.reshape(1, -1, *sils.shape[2:])  # the `all_ordered` collate: [1, 60, 64, 44]
    seq_lengths = torch.tensor([[30, 30]], dtype=torch.int32)
    with torch.no_grad():
        pooled = model.pooled_feature_map(packed, seq_lengths)
        parts = horizontal_pooling(pooled, GAITBASE_CASIAB.bin_num)
        embeddings = model(packed, seq_lengths)
        logits = model.bnneck_logits(embeddings)
        unpacked = model(sils)
    return {
        "TP_out": pooled.numpy(),
        "HPP_out": parts.numpy(),
        "embeddings": embeddings.numpy(),
        "bnneck_logits": logits.numpy(),
        "unpacked": unpacked.numpy(),
    }


# -- parity with the official model --------------------------------------------------------


def test_state_dict_has_official_keys_in_official_order(official_keys: list[list]) -> None:
    state = build_gaitbase(GAITBASE_CASIAB).state_dict()
    assert list(state) == [key for key, *_ in official_keys]
    assert [list(t.shape) for t in state.values()] == [shape for _, shape, *_ in official_keys]
    branches = Counter(branch for _, _, branch, _ in official_keys)
    assert branches == {
        "fanin_weight": 14,
        "norm_weight": 13,
        "mean_or_bias": 26,
        "running_var": 13,
        "skip": 13,
    }
    assert [rule_branch(k, t) for k, t in state.items()] == [b for _, _, b, _ in official_keys]


def test_replayed_weights_match_the_fixture_weightcheck(
    parity_dir: Path, replayed_state: dict[str, torch.Tensor]
) -> None:
    checks = json.loads((parity_dir / "weightcheck_gaitbase_casiab.json").read_text())
    assert [key for key, *_ in checks] == list(replayed_state)
    for key, total, first in checks:
        tensor = replayed_state[key]
        assert tensor.double().sum().item() == pytest.approx(total, rel=1e-9, abs=1e-9), key
        assert tensor.reshape(-1)[0].item() == pytest.approx(first, rel=0, abs=1e-12), key
    model = build_gaitbase(GAITBASE_CASIAB)
    for key, value in seeded_state(model).items():  # our order gives the same seeds
        assert torch.equal(value, replayed_state[key]), key


def test_backbone_and_pooling_match_official_intermediates(
    parity_dir: Path, parity_run: dict[str, np.ndarray]
) -> None:
    reference = np.load(parity_dir / "intermediates_gaitbase_casiab.npz")
    for name in ("TP_out", "HPP_out"):  # backbone + temporal max, then horizontal pooling
        ref = reference[name]
        assert parity_run[name].shape == ref.shape, name
        err = np.abs(parity_run[name] - ref).max()
        assert err <= TOL * np.abs(ref).max(), f"{name}: max abs error {err}"


def test_packed_sequences_give_official_embeddings(
    parity_dir: Path, parity_run: dict[str, np.ndarray]
) -> None:
    expected = np.load(parity_dir / "expected_gaitbase_casiab.npz")
    assert parity_run["embeddings"].shape == (2, 256, 16)
    assert np.abs(parity_run["embeddings"] - expected["embeddings"]).max() <= TOL
    assert np.abs(parity_run["bnneck_logits"] - expected["bnneck_logits"]).max() <= TOL


def test_one_row_per_sequence_equals_the_packed_batch(parity_run: dict[str, np.ndarray]) -> None:
    assert np.abs(parity_run["unpacked"] - parity_run["embeddings"]).max() <= 1e-6


def test_distance_matches_the_official_evaluator(
    parity_dir: Path, parity_run: dict[str, np.ndarray]
) -> None:
    expected = np.load(parity_dir / "expected_gaitbase_casiab.npz")
    reference = expected["euc_dist"]
    off_diagonal = ~np.eye(2, dtype=bool)
    for embeddings in (expected["embeddings"], parity_run["embeddings"]):
        dist = gait_distance(embeddings, embeddings)
        assert isinstance(dist, np.ndarray) and dist.shape == (2, 2)
        assert np.abs(dist - reference)[off_diagonal].max() <= TOL
        assert np.abs(np.diag(dist)).max() < 5e-3  # float32 cancellation noise, not 0


# -- behaviour without the fixture ---------------------------------------------------------


def test_packed_sequences_of_unequal_length_are_pooled_separately() -> None:
    torch.manual_seed(0)
    model = build_gaitbase(GAITBASE_CASIAB)
    model.load_state_dict(seeded_state(model))
    sils = (torch.rand(1, 7, 64, 44) < 0.5).float()
    with torch.no_grad():
        packed = model(sils, [3, 4])
        first, second = model(sils[:, :3]), model(sils[:, 3:])
        with pytest.raises(ValueError, match="sum to the 7"):
            model(sils, [3, 3])
    assert packed.shape == (2, 256, 16)
    assert torch.allclose(packed[0], first[0], atol=1e-6)
    assert torch.allclose(packed[1], second[0], atol=1e-6)
    assert not torch.allclose(packed[0], packed[1], atol=1e-3)


def test_gait_distance_is_the_part_mean_of_euclidean_distances() -> None:
    rng = np.random.default_rng(3)
    probe = rng.normal(size=(3, 8, 5)).astype(np.float32)
    gallery = rng.normal(size=(4, 8, 5)).astype(np.float32)
    brute = np.array(
        [[np.linalg.norm(p - g, axis=0).mean() for g in gallery] for p in probe], np.float32
    )
    dist = gait_distance(probe, gallery)
    assert dist.shape == (3, 4)
    np.testing.assert_allclose(dist, brute, rtol=1e-5, atol=1e-5)
    as_tensor = gait_distance(torch.from_numpy(probe), torch.from_numpy(gallery))
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), brute, rtol=1e-5, atol=1e-5)
    cosine = gait_distance(probe, probe, metric="cos")
    np.testing.assert_allclose(np.diag(cosine), 0.0, atol=1e-5)
    with pytest.raises(ValueError, match="alike"):
        gait_distance(probe, gallery[:, :4])


def test_config_reads_the_opengait_yaml_model_cfg() -> None:
    model_cfg = {
        "model": "Baseline",
        "backbone_cfg": {
            "type": "ResNet9",
            "block": "BasicBlock",
            "channels": [64, 128, 256, 512],
            "layers": [1, 1, 1, 1],
            "strides": [1, 2, 2, 1],
            "maxpool": False,
        },
        "SeparateFCs": {"in_channels": 512, "out_channels": 256, "parts_num": 16},
        "SeparateBNNecks": {"class_num": 74, "in_channels": 256, "parts_num": 16},
        "bin_num": [16],
    }
    assert GaitBaseConfig.from_model_cfg(model_cfg) == GAITBASE_CASIAB
    assert GAITBASE_CONFIGS["oumvlp"].separate_bnnecks.class_num == 5153
    with pytest.raises(ValueError, match="parts_num"):
        GaitBaseConfig(bin_num=(16, 8))
    with pytest.raises(ValueError, match="BasicBlock"):
        GaitBaseConfig(backbone=ResNet9Config(block="Bottleneck"))


def test_silhouette_cutting_keeps_the_middle_44_columns_in_unit_range() -> None:
    frames = np.zeros((2, 64, 64), np.uint8)
    frames[:, :, 10] = 255  # first kept column
    frames[:, :, 9] = 255  # cut away
    cut = base_sil_cutting(frames)
    assert cut.shape == (2, 64, 44) and cut.dtype == np.float32
    assert set(np.unique(cut)) == {0.0, 1.0}
    assert cut[:, :, 0].min() == 1.0 and cut[:, :, 1:].max() == 0.0


# -- official checkpoints ------------------------------------------------------------------


class NotAWeight:
    """A pickled object a weights-only load must refuse."""


def opengait_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What OpenGait's `save_ckpt` writes: model, SGD optimizer, MultiStepLR, iteration."""
    params = [torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [20000, 40000, 50000], 0.1)
    return {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),  # holds a collections.Counter
        "iteration": 60000,
    }


@pytest.fixture(scope="module")
def seeded_model() -> GaitBase:
    model = build_gaitbase(GAITBASE_CASIAB)
    model.load_state_dict(seeded_state(model), strict=True)
    return model


@pytest.fixture(scope="module")
def official_pt(seeded_model: GaitBase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gaitbase") / "GaitBase_DA-60000.pt"
    torch.save(opengait_checkpoint(seeded_model.state_dict()), path)
    return path


def test_official_checkpoint_loads_strictly_and_runs(
    official_pt: Path, seeded_model: GaitBase
) -> None:
    model = load_gaitbase(official_pt, GAITBASE_CASIAB)
    assert not model.training
    loaded, original = model.state_dict(), seeded_model.state_dict()
    assert list(loaded) == list(original)
    assert all(torch.equal(loaded[k], original[k]) for k in original)
    sils = (torch.rand(2, 4, 64, 44, generator=torch.Generator().manual_seed(5)) < 0.5).float()
    with torch.no_grad():
        assert torch.equal(model(sils), seeded_model(sils))


def test_truncated_checkpoint_is_a_model_missing_error(official_pt: Path, tmp_path: Path) -> None:
    whole = official_pt.read_bytes()
    for size in (0, 100, len(whole) // 2, len(whole) - 10):
        broken = tmp_path / f"truncated_{size}.pt"
        broken.write_bytes(whole[:size])
        with pytest.raises(ModelMissingError, match="not a readable OpenGait checkpoint"):
            load_gaitbase(broken)


def test_wrong_files_are_model_missing_errors(seeded_model: GaitBase, tmp_path: Path) -> None:
    state = seeded_model.state_dict()
    with pytest.raises(ModelMissingError, match="models add gaitbase-casiab"):
        load_gaitbase(tmp_path / "absent.pt")

    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ModelMissingError, match="not a readable"):
        load_gaitbase(text)

    bare = tmp_path / "bare_state_dict.pt"
    torch.save(state, bare)
    with pytest.raises(ModelMissingError, match="no 'model' state_dict"):
        load_gaitbase(bare)

    incomplete = tmp_path / "incomplete.pt"
    torch.save(
        opengait_checkpoint({k: v for k, v in state.items() if k != "FCs.fc_bin"}), incomplete
    )
    with pytest.raises(ModelMissingError, match=r"1 keys missing, e\.g\. \['FCs\.fc_bin'\]"):
        load_gaitbase(incomplete)

    other_head = tmp_path / "other_dataset.pt"
    torch.save(
        opengait_checkpoint({**state, "BNNecks.fc_bin": torch.zeros(16, 256, 73)}), other_head
    )
    with pytest.raises(ModelMissingError, match="size mismatch"):
        load_gaitbase(other_head)

    code = tmp_path / "pickled_object.pt"
    torch.save({**opengait_checkpoint(state), "extra": NotAWeight()}, code)
    with pytest.raises(ModelMissingError, match="non-tensor objects"):
        load_gaitbase(code)
