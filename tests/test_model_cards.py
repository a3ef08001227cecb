"""docs/models.md: one card per registry entry, figures read from benchmarks/results."""

from __future__ import annotations

import json

from biofuse.model_cards import CARDS, PUBLISHED_ONLY, REPO_ROOT, render
from biofuse.registry import SPECS


def test_every_registry_entry_has_a_card_and_no_card_is_orphaned() -> None:
    assert set(CARDS) == set(SPECS)


def test_docs_models_md_is_generated_from_the_registry() -> None:
    committed = (REPO_ROOT / "docs" / "models.md").read_text()
    assert committed == render(), "docs/models.md is stale: run python -m biofuse.model_cards"


def test_figures_come_from_the_results_files(tmp_path) -> None:
    (tmp_path / "body_shape.json").write_text(
        json.dumps({"eer": {"all": 0.3043, "concurrent": 0.2826}})
    )
    text = render(tmp_path)
    body = text.split("## mediapipe-pose-anthropometric")[1].split("\n## ")[0]
    assert "EER 30.4 % (all pairs), 28.3 %" in body and "`benchmarks/body_shape.py`" in body
    dlib = text.split("## dlib-resnet")[1].split("\n## ")[0]
    assert PUBLISHED_ONLY in dlib  # no lfw_pipeline.json in tmp_path: said, not invented
