"""biofuse.fusion.scorefiles: exact round trips, located errors, and metrics computed from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from biofuse.fusion.metrics import eer
from biofuse.fusion.scorefiles import (
    ScoreRow,
    Trial,
    read_four_column,
    read_score_csv,
    split_genuine_impostor,
    write_four_column,
    write_score_csv,
)

# A hand-made bob 4-column file: alice and bob each claimed by their own probe (genuine)
# and by each other's (impostor); a comment and a blank line that readers must skip.
HAND_MADE = """\
# claimed real probe score
alice alice alice_cam1_t3 0.9
alice bob   bob_cam2_t1   0.6

bob   bob   bob_cam2_t1   0.5
bob   alice alice_cam1_t3 -0.25
"""


def test_four_column_round_trip_is_exact(tmp_path: Path) -> None:
    trials = [
        Trial("alice", "alice", "p1", 0.1 + 0.2),  # 0.30000000000000004 must survive
        Trial("alice", "bob", "p2", -1e-300),
        ("bob", "bob", "p3", 7.0),  # plain tuples are accepted too
    ]
    path = tmp_path / "scores.txt"
    write_four_column(path, trials)
    back = read_four_column(path)
    assert back == [Trial(*t) if isinstance(t, tuple) else t for t in trials]
    assert back[0].score == 0.1 + 0.2
    assert path.read_text().splitlines()[1] == "alice bob p2 -1e-300"


def test_four_column_split_on_a_hand_made_file(tmp_path: Path) -> None:
    path = tmp_path / "hand.txt"
    path.write_text(HAND_MADE)
    trials = read_four_column(path)
    assert [t.genuine for t in trials] == [True, False, True, False]
    genuine, impostor = split_genuine_impostor(trials)
    np.testing.assert_array_equal(genuine, [0.9, 0.5])
    np.testing.assert_array_equal(impostor, [0.6, -0.25])
    assert genuine.dtype == impostor.dtype == np.float64


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("alice alice p9", "expected 4 fields"),
        ("alice alice p9 0.5 extra", "expected 4 fields"),
        ("alice alice p9 high", "not a number"),
        ("alice alice p9 nan", "NaN"),
    ],
)
def test_four_column_malformed_line_reports_its_line_number(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    lines = HAND_MADE.splitlines()
    lines.insert(4, bad_line)  # becomes line 5 (1-based), after the blank line 4
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"bad\.txt:5: .*{message}"):
        read_four_column(path)


def test_four_column_writer_refuses_ids_it_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="whitespace"):
        write_four_column(tmp_path / "x.txt", [Trial("alice smith", "alice smith", "p", 1.0)])
    with pytest.raises(ValueError, match="comment"):
        write_four_column(tmp_path / "x.txt", [Trial("#7", "#7", "p", 1.0)])
    with pytest.raises(ValueError, match="NaN"):
        write_four_column(tmp_path / "x.txt", [Trial("a", "a", "p", float("nan"))])


def test_eer_from_a_file_equals_eer_on_the_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    genuine = rng.normal(1.0, 1.0, 200)
    impostor = rng.normal(-1.0, 1.0, 300)
    trials = [Trial(f"id{i}", f"id{i}", f"g{i}", s) for i, s in enumerate(genuine)]
    trials += [Trial(f"id{i}", f"id{i + 1}", f"i{i}", s) for i, s in enumerate(impostor)]
    path = tmp_path / "scores.txt"
    write_four_column(path, trials)
    gen_read, imp_read = split_genuine_impostor(read_four_column(path))
    assert eer(gen_read, imp_read) == eer(genuine, impostor)
    # A sanity bound that could fail: separation 2 sigma -> EER = Phi(-1) = .159 in theory.
    assert 0.1 < eer(gen_read, imp_read) < 0.22


def test_score_csv_round_trip_with_empty_quality_and_label(tmp_path: Path) -> None:
    rows = [
        ScoreRow("track7", "alice", "face", 0.1 + 0.2, 0.8, True),
        ScoreRow("track7", "bob", "face", -0.05, 0.8, False),
        ScoreRow("track7", "alice", "voice", 3.5),  # quality and label unknown
        ScoreRow("track, odd", "bob", "gait", 1e-9, None, False),  # a comma in a name
    ]
    path = tmp_path / "scores.csv"
    write_score_csv(path, rows)
    text = path.read_text().splitlines()
    assert text[0] == "probe,identity,modality,score,quality,label"
    assert text[3] == "track7,alice,voice,3.5,,"
    assert read_score_csv(path) == rows


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("t1,alice,face,0.5,0.9", "expected 6 fields"),
        ("t1,alice,face,,0.9,1", "score is empty"),
        ("t1,alice,face,x,0.9,1", "not a number"),
        ("t1,alice,face,0.5,good,1", "quality"),
        ("t1,alice,face,0.5,0.9,yes", "label must be"),
        ("t1,,face,0.5,0.9,1", "identity is empty"),
    ],
)
def test_score_csv_malformed_line_reports_its_line_number(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "probe,identity,modality,score,quality,label\nt0,bob,face,0.1,,0\n" + bad_line + "\n"
    )
    with pytest.raises(ValueError, match=rf"bad\.csv:3: .*{message}"):
        read_score_csv(path)


def test_score_csv_requires_the_header(tmp_path: Path) -> None:
    path = tmp_path / "noheader.csv"
    path.write_text("t0,bob,face,0.1,,0\n")
    with pytest.raises(ValueError, match=r"noheader\.csv:1: header"):
        read_score_csv(path)
