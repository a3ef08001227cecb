"""Per-group error rates (`biofuse report --groups`): hand-worked figures, people bootstrap."""

from __future__ import annotations

import json

import numpy as np
import pytest
from biofuse.fusion.demographics import group_differentials, read_groups, threshold_at_fmr
from biofuse.fusion.report import labelled_tables
from biofuse.fusion.scorefiles import ScoreRow

IDS = ["A1", "A2", "B1", "B2"]
# probe -> (its person, scores against A1 A2 B1 B2); Na and Nb are not enrolled
SEARCHES = {
    "pa1": ("A1", [0.9, 0.1, 0.2, 0.1]),
    "pa2": ("A2", [0.4, 0.8, 0.1, 0.1]),
    "pb1": ("B1", [0.1, 0.1, 0.3, 0.2]),
    "pb2": ("B2", [0.1, 0.1, 0.2, 0.85]),
    "Na": ("Na", [0.5, 0.1, 0.1, 0.1]),
    "Nb": ("Nb", [0.1, 0.1, 0.1, 0.1]),
}
GROUPS = {"A1": "a", "A2": "a", "Na": "a", "B1": "b", "B2": "b", "Nb": "b"}


def _table():
    rows = [
        ScoreRow(probe, ident, "face", s, None, ident == person)
        for probe, (person, scores) in SEARCHES.items()
        for ident, s in zip(IDS, scores)
    ]
    return labelled_tables(rows)


def test_threshold_at_fmr_lets_through_at_most_the_target_share() -> None:
    impostor = np.linspace(0.1, 1.0, 10)
    t = threshold_at_fmr(impostor, 0.2)
    assert np.mean(impostor >= t) == pytest.approx(0.2)
    assert 0.8 < t < 0.9
    assert np.mean(impostor >= threshold_at_fmr(impostor, 1e-3)) == 0.0


def test_group_figures_by_hand() -> None:
    r = group_differentials(_table(), "face", GROUPS, operator_threshold=0.35, n_boot=200)
    # 20 impostor cells, top 0.5: at FMR <= 1e-2 nothing false matches, threshold just above 0.5
    assert r["thresholds"]["0.001"] == pytest.approx(0.5) and r["thresholds"]["0.001"] > 0.5
    a, b = (r["groups"][g]["at_fmr"]["0.01"] for g in "ab")
    assert a["fnmr"] == 0.0 and b["fnmr"] == 0.5  # B1's genuine 0.3 is below the threshold
    assert a["fmr_within"] == b["fmr_within"] == 0.0
    # within a: pa1->A2, pa2->A1 (0.4), Na->A1 (0.5), Na->A2; across: the 4 a->b cells x 3
    # a-probes plus b->a cells of 3 b-probes
    assert a["comparisons"] == {"genuine": 2, "impostor_within": 4, "impostor_across": 12}
    assert r["ratios"]["0.01"]["fnmr"] is None  # the lowest FNMR is 0: no finite ratio
    # open set at 0.35: Na's top 0.5 is a false positive, Nb's 0.1 is not; B1 missed (0.3)
    oa, ob = r["groups"]["a"]["open_set"], r["groups"]["b"]["open_set"]
    assert (oa["fpir"], ob["fpir"], oa["fnir"], ob["fnir"]) == (1.0, 0.0, 0.0, 0.5)
    assert oa["fpir_searches"] == 1 and ob["fnir_searches"] == 2
    # by default the operator's threshold lets at most 1 % of non-mated searches through
    d = group_differentials(_table(), "face", GROUPS, n_boot=50)
    assert d["operator_threshold"] > 0.5 and d["groups"]["a"]["open_set"]["fpir"] == 0.0


def test_bootstrap_resamples_people_not_comparisons() -> None:
    """One person with all the misses: leaving that person out gives 0, so the interval does."""
    rows, rng = [], np.random.default_rng(0)
    for i in range(10):
        person = f"P{i}"
        for k in range(20):  # 20 probes each; P0's all score low
            probe = f"{person}-{k}"
            rows.append(ScoreRow(probe, person, "face", 0.05 if i == 0 else 0.9, None, True))
            impostor = float(rng.uniform(0.0, 0.5))
            rows.append(ScoreRow(probe, f"P{(i + 1) % 10}", "face", impostor, None, False))
    groups = {f"P{i}": "g" for i in range(10)}
    r = group_differentials(labelled_tables(rows), "face", groups, n_boot=500, seed=1)
    row = r["groups"]["g"]["at_fmr"]["0.01"]
    assert row["fnmr"] == pytest.approx(0.1)
    lo, hi = row["fnmr_ci"]
    assert lo == 0.0 and hi >= 0.2  # a comparison bootstrap would give about [0.06, 0.14]


def test_read_groups_errors_name_the_line(tmp_path) -> None:
    good = tmp_path / "g.tsv"
    good.write_text("name\tgender\nA1\tfemale\nB1\tmale\n")
    assert read_groups(good) == {"A1": "female", "B1": "male"}
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\tgender\nA1\tfemale\nB1\n")
    with pytest.raises(ValueError, match="bad.tsv:3"):
        read_groups(bad)
    twice = tmp_path / "twice.tsv"
    twice.write_text("name\tgender\nA1\tfemale\nA1\tmale\n")
    with pytest.raises(ValueError, match="two groups"):
        read_groups(twice)


def test_report_cli_writes_group_tables_with_escaped_names(tmp_path) -> None:
    from biofuse.fusion.scorefiles import write_score_csv
    from typer.testing import CliRunner

    from biofuse.cli import app

    t = _table()
    rows = [
        ScoreRow(p, i, "face", float(t.scores["face"][pi, ii]), None, t.true_index[pi] == ii)
        for pi, p in enumerate(t.probes)
        for ii, i in enumerate(t.identities)
    ]
    write_score_csv(tmp_path / "s.csv", rows)
    groups = tmp_path / "groups.tsv"
    groups.write_text(
        "name\tgroup\n"
        + "".join(f"{n}\t{'<b>x</b>' if g == 'a' else g}\n" for n, g in GROUPS.items())
    )
    out = CliRunner().invoke(
        app,
        ["report", str(tmp_path / "s.csv"), "--groups", str(groups), "--out", str(tmp_path / "r")],
    )
    assert out.exit_code == 0, out.output
    for name in ("groups.md", "groups.html", "groups.json", "det_groups_face.png"):
        assert (tmp_path / "r" / name).is_file()
    page = (tmp_path / "r" / "groups.html").read_text()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    data = json.loads((tmp_path / "r" / "groups.json").read_text())
    assert data["face"]["groups"]["b"]["at_fmr"]["0.01"]["fnmr"] == 0.5
    missing = CliRunner().invoke(
        app, ["report", str(tmp_path / "s.csv"), "--groups", str(tmp_path / "nope.tsv")]
    )
    assert missing.exit_code == 2 and "nope.tsv" in missing.output
