"""A face model declared in the test folder alone runs through analyze_video, the store and
identify on real clips (issue 13, item 3): no file outside tests/ names it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # decodes and analyses three real clips


def test_a_toy_face_model_from_the_test_folder_runs_end_to_end(
    tmp_path: Path, shared_data: Path
) -> None:
    from biofuse.flows.archive import claim_and_process, register_videos
    from biofuse.flows.context import Context
    from biofuse.flows.gallery import enroll_media, identify_videos

    from biofuse.registry import SPECS

    videos = shared_data / "video"
    probe = videos / "videoretalking_face_3.mp4"  # AOC talking
    enrollment = videos / "sadtalker_WDA_AlexandriaOcasioCortez_000.mp4"
    if not (probe.is_file() and enrollment.is_file()):
        pytest.skip("shared video clips absent")
    # the plugin is named in the settings only: load_settings imports it, which registers it
    ctx = Context.open(
        home=str(tmp_path / "home"),
        plugins=["toy_plugins"],
        face_model="toy-face",
        modalities=["face"],
    )
    assert "toy-face" in SPECS
    ctx.model("face", use_ray=False)  # in this process (Ray workers do not see tests/)

    (video_id,) = register_videos(ctx, [probe])
    assert claim_and_process(ctx, video_id, "test") == "done"
    groups = {(m, model): n for m, model, n in ctx.store.groups()}
    ((modality, model_id),) = groups
    assert modality == "face" and model_id.startswith("toy-face-") and groups[modality, model_id]
    rows = ctx.store.read("face", model_id).as_embeddings()
    assert rows.vectors.shape[1] == 32 and np.isfinite(rows.vectors).all()

    assert enroll_media(ctx, "AOC", enrollment)["face"] == 1
    blair = sorted((shared_data / "lfw-dev/images/Tony_Blair").glob("*.jpg"))[:2]
    for photo in blair:
        enroll_media(ctx, "Tony_Blair", photo)
    basis: dict = {}
    decisions = identify_videos(ctx, [video_id], None, basis)
    assert basis["models"] == {"face": model_id}
    assert basis["calibrations"]["face"]["fitted_on"] == "toy: by hand"
    assert decisions
    for _, decision in decisions:
        assert decision.modalities == ["face"]
        for candidate in decision.candidates:
            face = candidate.per_modality["face"]
            assert np.isfinite(face["score"]) and abs(face["llr"]) <= 3.0  # its declared map
    # even this toy tells the enrolled person from the other (AOC 0.995 vs Blair 0.14 here)
    ((_, decision),) = decisions
    scores = {c.identity: c.per_modality["face"]["score"] for c in decision.candidates}
    assert scores["AOC"] > scores["Tony_Blair"] + 0.3
