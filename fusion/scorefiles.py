"""Score files on disk: bob's 4-column text format and our CSV score-table form.

The 4-column format (`claimed_id real_id test_label score`, one trial per line) is what
bob.measure, and the published baselines that use it, read and write, so our scores can be
checked against theirs. The CSV form is the Fusion contract's score table
(probe, identity, modality, score, quality) plus an optional ground-truth label. Readers
fail on the first malformed line with its file and line number, because a silently skipped
trial biases every error rate computed afterwards.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CSV_HEADER = ("probe", "identity", "modality", "score", "quality", "label")


@dataclass(frozen=True)
class Trial:
    """One comparison of a probe against a claimed identity; `real_id` is who it really is."""

    claimed_id: str
    real_id: str
    probe: str
    score: float

    @property
    def genuine(self) -> bool:
        return self.claimed_id == self.real_id


@dataclass(frozen=True)
class ScoreRow:
    """One row of a score table. `quality` and `label` are None where unknown.

    `label` is the ground truth when known: True when `probe` really is `identity`.
    """

    probe: str
    identity: str
    modality: str
    score: float
    quality: float | None = None
    label: bool | None = None


def _format_float(x: float) -> str:
    # repr is the shortest text that reads back to the same float, so files round-trip exactly
    return repr(float(x))


def _parse_score(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: score {text!r} is not a number") from None
    if math.isnan(value):
        raise ValueError(f"{where}: score is NaN; leave a missing comparison out instead")
    return value


def write_four_column(
    path: str | Path, rows: Iterable[Trial | tuple[str, str, str, float]]
) -> None:
    """Write trials as `claimed_id real_id test_label score` lines (bob's 4-column format)."""
    lines = []
    for n, row in enumerate(rows, start=1):
        trial = row if isinstance(row, Trial) else Trial(*row)
        for field in (trial.claimed_id, trial.real_id, trial.probe):
            if not field or any(c.isspace() for c in field):
                raise ValueError(
                    f"trial {n}: id {field!r} is empty or contains whitespace, "
                    "which the 4-column format cannot hold"
                )
        if trial.claimed_id.startswith("#"):
            raise ValueError(f"trial {n}: claimed id {trial.claimed_id!r} would read as a comment")
        if math.isnan(trial.score):
            raise ValueError(f"trial {n}: score is NaN; leave a missing comparison out instead")
        lines.append(
            f"{trial.claimed_id} {trial.real_id} {trial.probe} {_format_float(trial.score)}\n"
        )
    Path(path).write_text("".join(lines), encoding="utf-8")


def read_four_column(path: str | Path) -> list[Trial]:
    """Trials from a 4-column score file; blank lines and `#` comment lines are skipped."""
    trials = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0].startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if len(fields) != 4:
                raise ValueError(
                    f"{where}: expected 4 fields (claimed_id real_id test_label score), "
                    f"got {len(fields)}: {line.strip()!r}"
                )
            claimed, real, probe, score = fields
            trials.append(Trial(claimed, real, probe, _parse_score(score, where)))
    return trials


def split_genuine_impostor(trials: Iterable[Trial]) -> tuple[np.ndarray, np.ndarray]:
    """(genuine scores, impostor scores) as float64 arrays, the inputs of biofuse.fusion.metrics."""
    genuine, impostor = [], []
    for t in trials:
        (genuine if t.genuine else impostor).append(t.score)
    return np.array(genuine, dtype=np.float64), np.array(impostor, dtype=np.float64)


def write_score_csv(path: str | Path, rows: Iterable[ScoreRow]) -> None:
    """Write a score table as CSV with the header probe,identity,modality,score,quality,label."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for n, r in enumerate(rows, start=1):
            if math.isnan(r.score):
                raise ValueError(f"row {n}: score is NaN; leave a missing modality out instead")
            quality = "" if r.quality is None else _format_float(r.quality)
            label = "" if r.label is None else str(int(r.label))
            writer.writerow(
                [r.probe, r.identity, r.modality, _format_float(r.score), quality, label]
            )


def read_score_csv(path: str | Path) -> list[ScoreRow]:
    """Rows of a score-table CSV. Empty quality/label read as None; label must be 0 or 1."""
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or tuple(h.strip() for h in header) != CSV_HEADER:
            raise ValueError(f"{path}:1: header must be {','.join(CSV_HEADER)}, got {header!r}")
        for record in reader:
            where = f"{path}:{reader.line_num}"
            if not record or all(not v.strip() for v in record):
                continue
            if len(record) != len(CSV_HEADER):
                raise ValueError(
                    f"{where}: expected {len(CSV_HEADER)} fields, got {len(record)}: {record!r}"
                )
            probe, identity, modality, score, quality, label = (v.strip() for v in record)
            for name, value in (("probe", probe), ("identity", identity), ("modality", modality)):
                if not value:
                    raise ValueError(f"{where}: {name} is empty")
            if not score:
                raise ValueError(f"{where}: score is empty; leave a missing modality out instead")
            q: float | None = None
            if quality:
                try:
                    q = float(quality)
                except ValueError:
                    raise ValueError(f"{where}: quality {quality!r} is not a number") from None
            if label not in ("", "0", "1"):
                raise ValueError(f"{where}: label must be 0, 1 or empty, got {label!r}")
            rows.append(
                ScoreRow(
                    probe=probe,
                    identity=identity,
                    modality=modality,
                    score=_parse_score(score, where),
                    quality=q,
                    label=None if label == "" else label == "1",
                )
            )
    return rows
