"""KP-RPE (CVLface vit_kprpe, ViT-base): parity with the official code, strict keys, installer.

Fixtures (tests/fixtures/kprpe, made by its make_fixture.py from the official code, see
tests/fixtures/README.md): `depth2` is the official network with 2 blocks (fast test); `base`
is the full-size release architecture (24 blocks; slow test). Both record the official
state_dict as [key, shape, branch, seed]; the weights are rebuilt with the shared rule.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from biofuse.modalities.face.kprpe import (
    KPRPE_BASE,
    build_kprpe,
    chips_to_input,
    load_kprpe,
    product_buckets,
)
from conftest import seeded_tensor

from biofuse.errors import ModelMissingError
from biofuse.registry import Registry

FIXTURES = Path(__file__).parent / "fixtures" / "kprpe"
TOL = 1e-5
TOKENS = slice(None, None, 14)


def seeded_model(folder: Path, depth: int):
    keys = json.loads((folder / "keys.json").read_text())
    model = build_kprpe(replace(KPRPE_BASE, depth=depth))
    template = model.state_dict()
    assert [k for k, *_ in keys] == list(template)  # official names, official order
    state = {}
    for key, shape, branch, seed in keys:
        assert list(template[key].shape) == shape, key
        value = seeded_tensor(shape, branch, seed)
        state[key] = template[key].clone() if value is None else value
    model.load_state_dict(state, strict=True)
    return model, state


def parity_errors(folder: Path, model) -> dict[str, float]:
    inputs = np.load(folder / "input.npz")
    expected = np.load(folder / "expected.npz")
    inter = np.load(folder / "intermediates.npz")
    keep: dict[str, torch.Tensor] = {}
    x = chips_to_input(torch.from_numpy(inputs["images"]))
    with torch.no_grad():
        emb = model.net(x, torch.from_numpy(inputs["landmarks"]), keep)
    cfg = model.net.cfg
    errors = {"embeddings": np.abs(emb.numpy() - expected["embeddings"]).max()}
    errors["patch_embed"] = np.abs(
        keep["patch_embed"][:, TOKENS].numpy() - inter["patch_embed"]
    ).max()
    flat = keep["tables"].transpose(1, 2).reshape(2, cfg.side**2, -1)  # the linear's output
    errors["keypoint_linear"] = np.abs(
        flat[:, TOKENS, ::97].numpy() - inter["keypoint_linear"]
    ).max()
    table0 = keep["tables"][:, : cfg.num_heads]
    rpe0 = torch.gather(table0, 3, model.net.buckets.expand(2, cfg.num_heads, -1, -1))
    errors["rpe_k0"] = np.abs(rpe0[:, :, TOKENS].numpy() - inter["rpe_k0"]).max()
    for name in inter.files:
        if name.startswith("block") or name == "norm":
            errors[name] = np.abs(keep[name][:, TOKENS].numpy() - inter[name]).max()
    assert float(np.abs(expected["embeddings"]).std()) > 0.1
    return errors


def test_parity_depth2_official_network() -> None:
    model, _ = seeded_model(FIXTURES / "depth2", depth=2)
    errors = parity_errors(FIXTURES / "depth2", model)
    assert len(errors) == 7 and max(errors.values()) <= TOL, errors


@pytest.mark.slow
def test_parity_full_size_release_architecture() -> None:
    model, _ = seeded_model(FIXTURES / "base", depth=24)
    errors = parity_errors(FIXTURES / "base", model)
    assert max(errors.values()) <= TOL, errors


def test_full_size_graph_has_the_official_keys_and_shapes() -> None:
    """Without building weights: our full-size state_dict equals the official key list."""
    keys = json.loads((FIXTURES / "base" / "keys.json").read_text())
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in build_kprpe().state_dict().items()}
    assert list(ours.items()) == [(k, shape) for k, shape, *_ in keys]
    assert sum(np.prod(s) for s in ours.values()) > 100_000_000


def test_buckets_are_the_product_method() -> None:
    buckets = product_buckets(14, 1.9)
    assert buckets.shape == (196, 196) and int(buckets.min()) == 0 and int(buckets.max()) == 48
    assert int(buckets[0, 0]) == 24  # zero offset: the centre of the 7x7 table
    assert torch.equal(buckets + buckets.T, torch.full_like(buckets, 48))  # antisymmetric offsets


# -- installer ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def release_files(tmp_path_factory: pytest.TempPathFactory):
    """A seeded full-size model written in both published layouts."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("kprpe_release")
    torch.manual_seed(3)
    model = build_kprpe()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    hf = folder / "model.safetensors"
    save_file({"model." + k: v for k, v in state.items()}, str(hf), metadata={"format": "pt"})
    pt = folder / "model.pt"
    torch.save(state, pt)
    return model, hf, pt


@pytest.mark.parametrize("layout", ["hf", pytest.param("pt", marks=pytest.mark.slow)])
def test_registry_add_accepts_the_release_layouts(tmp_path: Path, release_files, layout) -> None:
    model, hf, pt = release_files
    source = hf if layout == "hf" else pt
    registry = Registry(tmp_path / "models")
    resolved = registry.add("kprpe-vit-base-webface4m", source, training_set="WebFace4M")
    record = registry.record("kprpe-vit-base-webface4m")
    assert resolved.paths["weights"].suffix == ".safetensors"
    assert len(record["source_sha256"]) == len(record["sha256"]) == 64
    loaded = load_kprpe(resolved.paths["weights"])
    x, marks = torch.randn(1, 3, 112, 112), torch.rand(1, 5, 2)
    with torch.no_grad():
        assert (loaded(x, marks) - model(x, marks)).abs().max() <= TOL
    if layout == "hf":  # the extractor on the installed file: unit rows, the landmarks matter
        from biofuse.modalities.face.align import ARCFACE_TEMPLATE_112
        from biofuse.modalities.face.kprpe import KeypointFace, KPRPEEmbedder, chip_landmarks

        chip = np.random.default_rng(1).integers(0, 255, (112, 112, 3), dtype=np.uint8)
        on_chip = chip_landmarks(ARCFACE_TEMPLATE_112 * 2 + 40)  # any similarity: the template
        np.testing.assert_allclose(on_chip, ARCFACE_TEMPLATE_112 / 112, atol=1e-5)
        faces = [
            KeypointFace("a", chip, on_chip, 0.9),
            KeypointFace("b", chip, on_chip + 0.05, 0.5),
        ]
        rows = KPRPEEmbedder(resolved).embed(faces)
        assert rows.vectors.shape == (2, 512)
        np.testing.assert_allclose(np.linalg.norm(rows.vectors, axis=1), 1, atol=1e-5)
        assert np.abs(rows.vectors[0] - rows.vectors[1]).max() > 1e-5  # same chip, moved marks


@pytest.mark.parametrize("case", ["random", "truncated", "foreign_keys", "wrong_depth"])
def test_registry_add_refuses_wrong_files(tmp_path: Path, release_files, case: str) -> None:
    from safetensors.torch import save_file

    _, hf, _ = release_files
    source = tmp_path / "model.safetensors"
    if case == "random":
        source.write_bytes(np.random.default_rng(0).bytes(4096))
    elif case == "truncated":
        whole = hf.read_bytes()
        source.write_bytes(whole[: len(whole) // 3])
    elif case == "foreign_keys":
        save_file({"backbone.weight": torch.zeros(2)}, str(source))
    else:
        small = build_kprpe(replace(KPRPE_BASE, depth=2)).state_dict()
        save_file({"model." + k: v.contiguous() for k, v in small.items()}, str(source))
    registry = Registry(tmp_path / "models")
    with pytest.raises(ModelMissingError, match="KP-RPE|kprpe|vit_kprpe"):
        registry.add("kprpe-vit-base-webface4m", source)
    assert not (tmp_path / "models" / "kprpe-vit-base-webface4m").exists()
    assert registry.record("kprpe-vit-base-webface4m") == {}
