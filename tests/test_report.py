"""`biofuse report` pieces: labelled tables from score files, hand-checked figures, files."""

from __future__ import annotations

import numpy as np
import pytest
from biofuse.fusion.report import labelled_tables, read_rows, summarise, write_report
from biofuse.fusion.scorefiles import ScoreRow, Trial, write_four_column, write_score_csv

# p1 is A, p2 is B, p3 is nobody enrolled
ROWS = [
    ScoreRow("p1", "A", "face", 0.9, 0.8, True),
    ScoreRow("p1", "B", "face", 0.2, 0.8, False),
    ScoreRow("p2", "A", "face", 0.4, 0.5, False),
    ScoreRow("p2", "B", "face", 0.45, 0.5, True),
    ScoreRow("p3", "A", "face", 0.5, 0.9, False),
    ScoreRow("p3", "B", "face", 0.3, 0.9, False),
]


def test_labelled_tables_pivot_rows() -> None:
    t = labelled_tables(ROWS)
    assert t.probes == ["p1", "p2", "p3"] and t.identities == ["A", "B"]
    np.testing.assert_array_equal(t.true_index, [0, 1, -1])
    np.testing.assert_allclose(t.scores["face"], [[0.9, 0.2], [0.4, 0.45], [0.5, 0.3]])
    np.testing.assert_allclose(t.quality["face"], [0.8, 0.5, 0.9])


def test_summary_by_hand() -> None:
    t = labelled_tables(ROWS)
    s = summarise(t.scores["face"], t.true_index)
    # genuine .9 .45, impostor .2 .4 .5 .3: FRR-FAR is .25 at t=.5 and -.25 at t=.45 -> EER .25
    assert s["eer"] == pytest.approx(0.25)
    assert s["tar_at_far_0.01"] == pytest.approx(0.5)
    assert s["rank1"] == 1.0
    # the stranger's top is .5, so only thresholds above it meet FPIR 1%: .9 keeps p1 only
    assert s["fnir_at_fpir_0.01"] == pytest.approx(0.5)
    assert s["nonmated_searches"] == {"count": 1, "from": "non-mated probes"}


def test_unlabelled_rows_are_refused() -> None:
    with pytest.raises(ValueError, match="label"):
        labelled_tables([ScoreRow("p", "A", "face", 0.1)])


def test_report_files_from_csv_and_four_column(tmp_path) -> None:
    csv_path = tmp_path / "scores.csv"
    write_score_csv(csv_path, ROWS)
    summary = write_report(labelled_tables(read_rows(csv_path)), tmp_path / "out")
    for name in ("roc.png", "det.png", "cmc.png", "histograms.png", "report.md", "report.html"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert "| face |" in (tmp_path / "out" / "report.md").read_text()
    assert summary["face"]["rank1"] == 1.0
    four = tmp_path / "scores.txt"
    write_four_column(
        four,
        [
            Trial(
                r.identity,
                "A" if r.probe == "p1" else ("B" if r.probe == "p2" else "Z"),
                r.probe,
                r.score,
            )
            for r in ROWS
        ],
    )
    t = labelled_tables(read_rows(four))
    np.testing.assert_array_equal(t.true_index, [0, 1, -1])
    assert list(t.scores) == ["score"]


def test_report_and_calibrate_commands(tmp_path, monkeypatch) -> None:
    from biofuse.fusion.decide import OperatorCalibration
    from typer.testing import CliRunner

    from biofuse.cli import app

    monkeypatch.setenv("BIOFUSE_HOME", str(tmp_path / "home"))
    rng = np.random.default_rng(0)
    mate = [p % 8 if p < 32 else -1 for p in range(40)]  # p >= 32: strangers
    rows = [
        ScoreRow(
            f"p{p}", f"id{i}", "face", float(rng.normal(0.2 + 0.5 * (m == i), 0.1)), 1.0, m == i
        )
        for p, m in enumerate(mate)
        for i in range(8)
    ]
    write_score_csv(tmp_path / "s.csv", rows)
    runner = CliRunner()
    out = runner.invoke(app, ["report", str(tmp_path / "s.csv"), "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "r" / "det.png").is_file() and "face: EER" in out.output
    out = runner.invoke(
        app,
        ["calibrate", str(tmp_path / "s.csv"), "--target-fpir", "0.125", "--model-id", "face=f-1"],
    )
    assert out.exit_code == 0, out.output
    cal = OperatorCalibration.load(tmp_path / "home" / "calibration.json")
    assert cal.model_ids == {"face": "f-1"} and cal.report["fpir_at_threshold"] <= 0.125
    bad = runner.invoke(app, ["calibrate", str(tmp_path / "missing.csv")])
    assert bad.exit_code == 2 and "error" in bad.output
