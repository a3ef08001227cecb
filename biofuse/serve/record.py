"""A self-contained decision record per result, sealed with a sha256.

One JSON document says everything a later reader needs to check one identity decision:
the probe, the ranked candidates with per-modality scores, LLRs and qualities, the models
with their weights' sha256, the calibration maps and what they were fitted on, the gallery
version, the threshold and prior the decision used, and the software that took it. The
`sha256` field is the digest of the record's canonical JSON without that field, so an
edited record no longer verifies (`biofuse explain --verify FILE`). It proves integrity,
not authorship: whoever can rewrite the record can reseal it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import biofuse
from biofuse.catalog import Catalog, Run, Video
from biofuse.config import Settings
from biofuse.errors import BiofuseError

FORMAT = "biofuse-decision-record/1"


def canonical(record: dict[str, Any]) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the bytes the seal is computed over."""
    body = {k: v for k, v in record.items() if k != "sha256"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "sha256": hashlib.sha256(canonical(record)).hexdigest()}


def verify(record: dict[str, Any]) -> bool:
    return record.get("sha256") == hashlib.sha256(canonical(record)).hexdigest()


def _weights(model_id: str, settings: Settings) -> dict[str, Any]:
    """The model's registry name and full weights sha256, if the installed file is that one."""
    from biofuse.fusion.calibration import model_name
    from biofuse.registry import Registry

    name = model_name(model_id)
    out: dict[str, Any] = {"model_id": model_id, "name": name, "weights_sha256": None}
    try:
        resolved = Registry(Path(settings.models_dir)).resolve(name)
    except (BiofuseError, KeyError, OSError):
        out["note"] = "not installed here: weights digest unknown"
        return out
    if resolved.model_id == model_id:
        out["weights_sha256"] = resolved.sha256
    else:
        out["note"] = f"installed weights are now {resolved.model_id}"
    return out


def decision_record(catalog: Catalog, settings: Settings, key: str) -> dict[str, Any]:
    """The sealed record of the newest decision on probe `key` (a track key)."""
    from biofuse.serve.app import track_detail

    with catalog.session() as s:
        detail = track_detail(s, key, settings)
        if detail is None:
            raise BiofuseError(f"no track {key!r}: list tracks with `biofuse status`")
        if detail.decision is None:
            raise BiofuseError(f"track {key!r} has no identify result yet: run `biofuse identify`")
        video = s.get(Video, detail.video_id)
        run = s.get(Run, detail.run_id) if detail.run_id is not None else None
        summary = dict(run.summary or {}) if run is not None else {}
        run_info = {
            "id": detail.run_id,
            "started_utc": run.started_at.isoformat() if run is not None else None,
            "finished_utc": run.finished_at.isoformat() if run and run.finished_at else None,
        }
    used = dict(summary.get("models") or {})
    for c in detail.candidates:
        for modality, e in c.modalities.items():
            if e.model_id:
                used.setdefault(modality, e.model_id)
    probe = detail.model_dump(exclude={"candidates", "decision", "run_id", "top"})
    probe["video"] = {
        "path": video.path if video else None,
        "content_hash": video.content_hash if video else None,
    }
    record = {
        "format": FORMAT,
        "created_utc": datetime.now(UTC).isoformat(),
        "software": {"biofuse": biofuse.__version__, "python": platform.python_version()},
        "probe": probe,
        "run": run_info,
        "decision": detail.decision.model_dump(),
        "candidates": [c.model_dump() for c in detail.candidates],
        "models": {m: _weights(model_id, settings) for m, model_id in sorted(used.items())},
        "calibrations": summary.get("calibrations"),
        "gallery_version": detail.decision.gallery_version,
    }
    if record["calibrations"] is None:
        record["calibrations_note"] = "the identify run predates recorded calibrations"
    return seal(record)
