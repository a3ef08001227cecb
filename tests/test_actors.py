"""Cutting a merged batch back into the callers' shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from biofuse.flows.actors import _split
from biofuse.modalities.base import Embeddings


@dataclass
class Item:
    key: str


def test_embeddings_go_back_by_key_when_the_model_dropped_items() -> None:
    # caller A sent a1, a2; caller B sent b1, b2; the model dropped a2 (too short)
    result = Embeddings(
        np.eye(3, dtype=np.float32), np.ones(3, np.float32), ["a1", "b1", "b2"], "m"
    )
    a, b = _split(result, [[Item("a1"), Item("a2")], [Item("b1"), Item("b2")]])
    assert a.keys == ["a1"] and b.keys == ["b1", "b2"]
    np.testing.assert_array_equal(b.vectors, np.eye(3, dtype=np.float32)[1:])


def test_list_results_go_back_in_order() -> None:
    assert _split(["x", "y", "z"], [[1], [2, 3]]) == [["x"], ["y", "z"]]
