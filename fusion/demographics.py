"""Error rates per demographic group at one global threshold, as NIST FRTE reports them.

Input is a labelled score table (probe x identity, see `biofuse.fusion.report.LabelledScores`) and a
group label per person. The thresholds are set once on *all* impostor comparisons (FMR =
1e-3 and 1e-2), as an operator would set them, and every group is then measured at them:

- FNMR of the group: its people's genuine comparisons scoring below the threshold.
- FMR within the group: impostor comparisons where both people are in the group.
- FMR across: impostor comparisons with exactly one side in the group.
- FPIR / FNIR at the operator's threshold: the open-set view, one search per probe
  (non-mated: any candidate at or above the threshold; mated: the true identity not first
  or below the threshold). Unless given, the threshold is the one at which 1 % of all
  non-mated searches return a candidate (FPIR = 1e-2 overall).

Confidence intervals come from a bootstrap over *people*, not comparisons: comparisons of
one person are correlated (one hard face makes many errors), so resampling comparisons
would give intervals far too narrow. Each comparison belongs to its probe's person (a
cross-group impostor comparison to the side that is in the group).
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.fusion import metrics
from biofuse.fusion.report import LabelledScores

FMR_TARGETS = (1e-3, 1e-2)
METRICS = ("fnmr", "fmr_within", "fmr_across")
OPEN_SET = ("fpir", "fnir")
OPERATOR_FPIR = 1e-2  # default operator's threshold: 1 % of non-mated searches return anyone


def read_groups(path: str | Path) -> dict[str, str]:
    """`name<TAB>group` (or comma-separated) lines with a header; errors name file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason})") from None
    delimiter = "\t" if "\t" in text.split("\n", 1)[0] else ","
    groups: dict[str, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), 1):
        if number == 1 or not row or not "".join(row).strip():
            continue  # header, blank
        if len(row) != 2 or not row[0].strip() or not row[1].strip():
            raise ValueError(f"{path}:{number}: expected 'name{delimiter!r}group', got {row!r}")
        name, group = row[0].strip(), row[1].strip()
        if groups.get(name, group) != group:
            raise ValueError(f"{path}:{number}: {name!r} is in two groups")
        groups[name] = group
    if not groups:
        raise ValueError(f"{path}: no 'name, group' rows")
    return groups


def threshold_at_fmr(impostor: np.ndarray, fmr: float) -> float:
    """The lowest threshold t (match: score >= t) at which at most `fmr` of impostors match."""
    ranked = np.sort(np.asarray(impostor, np.float64))[::-1]
    k = int(np.floor(fmr * ranked.size))
    if k >= ranked.size:
        return float(ranked[-1])
    return float(np.nextafter(ranked[k], np.inf))


@dataclass
class _Cells:
    """Every compared (probe, identity) cell, flattened, with the people and groups involved."""

    score: np.ndarray
    genuine: np.ndarray
    probe_person: np.ndarray  # index into `people`
    identity_person: np.ndarray
    probe_group: np.ndarray  # index into `groups`, -1: unknown
    identity_group: np.ndarray


def _cells(table: LabelledScores, scores: np.ndarray, groups: dict[str, str]) -> tuple:
    probe_names = [
        table.identities[t] if t >= 0 else table.probes[p] for p, t in enumerate(table.true_index)
    ]
    people = sorted(set(probe_names) | set(table.identities))
    person_index = {n: i for i, n in enumerate(people)}
    group_names = sorted(set(groups.values()))
    group_index = {g: i for i, g in enumerate(group_names)}
    person_group = np.array([group_index.get(groups.get(n, ""), -1) for n in people])
    probe_person = np.array([person_index[n] for n in probe_names])
    ident_person = np.array([person_index[n] for n in table.identities])
    rows, cols = np.nonzero(~np.isnan(scores))
    genuine = table.true_index[rows] == cols
    cells = _Cells(
        scores[rows, cols],
        genuine,
        probe_person[rows],
        ident_person[cols],
        person_group[probe_person[rows]],
        person_group[ident_person[cols]],
    )
    return cells, people, group_names, person_group, probe_person


def _per_person(n_people: int, owner: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """(2, n_people): errors and comparisons attributed to each person."""
    return np.stack(
        [
            np.bincount(owner, weights=errors.astype(np.float64), minlength=n_people),
            np.bincount(owner, minlength=n_people).astype(np.float64),
        ]
    )


def _rate(stats: np.ndarray, members: np.ndarray) -> float | None:
    total = stats[1, members].sum()
    return float(stats[0, members].sum() / total) if total else None


def _interval(
    stats: np.ndarray, members: np.ndarray, draws: np.ndarray
) -> tuple[float, float] | None:
    """95 % percentile interval of the rate over bootstrap draws of the group's people."""
    if not stats[1, members].sum():
        return None
    picked = members[draws]  # (B, n) resampled people
    errors, totals = stats[0, picked].sum(axis=1), stats[1, picked].sum(axis=1)
    ok = totals > 0
    if not ok.any():
        return None
    lo, hi = np.percentile(errors[ok] / totals[ok], [2.5, 97.5])
    return float(lo), float(hi)


def _ratio(values: list[float | None]) -> float | None:
    """max / min over groups; None when a group has no figure or the minimum is 0."""
    if any(v is None for v in values) or not values:
        return None
    low = min(values)  # type: ignore[type-var]
    return float(max(values) / low) if low > 0 else None  # type: ignore[type-var, operator]


def _searches(
    table: LabelledScores, scores: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per probe compared with everyone: searched?, mated?, error at `threshold`."""
    full = ~np.isnan(scores).any(axis=1) & (scores.shape[1] > 0)
    mated = table.true_index >= 0
    filled = np.where(np.isnan(scores), -np.inf, scores)
    top = filled.max(axis=1) if scores.shape[1] else np.full(len(scores), -np.inf)
    true = np.where(mated, filled[np.arange(len(scores)), np.maximum(table.true_index, 0)], -np.inf)
    rank_one = true >= top  # ties with the true identity count as found
    error = np.where(mated, ~(rank_one & (true >= threshold)), top >= threshold)
    return full, mated, error


def group_differentials(
    table: LabelledScores,
    modality: str,
    groups: dict[str, str],
    operator_threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The per-group table of one modality's scores (see the module docstring)."""
    scores = table.scores[modality]
    cells, people, group_names, person_group, probe_person = _cells(table, scores, groups)
    impostor = cells.score[~cells.genuine]
    if not cells.genuine.any() or impostor.size == 0:
        raise ValueError(f"{modality}: need genuine and impostor comparisons")
    thresholds = {f"{f:g}": threshold_at_fmr(impostor, f) for f in FMR_TARGETS}
    full, mated, _ = _searches(table, scores, np.inf)
    nonmated_tops = np.where(np.isnan(scores), -np.inf, scores)[full & ~mated].max(axis=1)
    if operator_threshold is None:  # an operator sets the 1:N threshold for FPIR, not FMR
        operator_threshold = (
            threshold_at_fmr(nonmated_tops, OPERATOR_FPIR)
            if nonmated_tops.size
            else thresholds[f"{FMR_TARGETS[0]:g}"]
        )
    rng = np.random.default_rng(seed)
    n_people = len(people)
    result: dict[str, Any] = {
        "modality": modality,
        "thresholds": thresholds,
        "operator_threshold": float(operator_threshold),
        "bootstrap": {"draws": n_boot, "seed": seed, "unit": "person", "interval": "95 %"},
        "ungrouped_people": int((person_group < 0).sum()),
        "groups": {},
    }
    members = {g: np.flatnonzero(person_group == k) for k, g in enumerate(group_names)}
    draws = {g: rng.integers(0, len(m), (n_boot, len(m))) for g, m in members.items() if len(m)}
    for g in group_names:
        result["groups"][g] = {"people": int(len(members[g])), "at_fmr": {}}
    for name, t in thresholds.items():
        match = cells.score >= t
        per_group: dict[str, dict[str, Any]] = {g: {} for g in group_names}
        for k, g in enumerate(group_names):
            in_p, in_i = cells.probe_group == k, cells.identity_group == k
            genuine = cells.genuine & in_p
            within = ~cells.genuine & in_p & in_i
            across = ~cells.genuine & (in_p ^ in_i)
            owner_across = np.where(in_p, cells.probe_person, cells.identity_person)
            parts = {
                "fnmr": _per_person(n_people, cells.probe_person[genuine], ~match[genuine]),
                "fmr_within": _per_person(n_people, cells.probe_person[within], match[within]),
                "fmr_across": _per_person(n_people, owner_across[across], match[across]),
            }
            counts = {"genuine": int(genuine.sum()), "impostor_within": int(within.sum())}
            counts["impostor_across"] = int(across.sum())
            row: dict[str, Any] = {"comparisons": counts}
            for metric, stats in parts.items():
                row[metric] = _rate(stats, members[g])
                row[f"{metric}_ci"] = _interval(stats, members[g], draws[g]) if g in draws else None
            per_group[g] = row
        for g in group_names:
            result["groups"][g]["at_fmr"][name] = per_group[g]
        result.setdefault("ratios", {})[name] = {
            m: _ratio([per_group[g][m] for g in group_names]) for m in METRICS
        }
    full, mated, error = _searches(table, scores, operator_threshold)
    probe_group = person_group[probe_person]
    for k, g in enumerate(group_names):
        mine = full & (probe_group == k)
        open_set: dict[str, Any] = {}
        for metric, kind in (("fpir", ~mated), ("fnir", mated)):
            sel = mine & kind
            stats = _per_person(n_people, probe_person[sel], error[sel])
            open_set[metric] = _rate(stats, members[g])
            open_set[f"{metric}_ci"] = (
                _interval(stats, members[g], draws[g]) if g in draws else None
            )
            open_set[f"{metric}_searches"] = int(sel.sum())
        result["groups"][g]["open_set"] = open_set
    result["ratios"]["open_set"] = {
        m: _ratio([result["groups"][g]["open_set"][m] for g in group_names]) for m in OPEN_SET
    }
    return result


def _det_plot(table: LabelledScores, modality: str, groups: dict[str, str], out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = table.scores[modality]
    cells, _people, group_names, _pg, _pp = _cells(table, scores, groups)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for k, g in enumerate(group_names):
        gen = cells.score[cells.genuine & (cells.probe_group == k)]
        imp = cells.score[~cells.genuine & (cells.probe_group == k) & (cells.identity_group == k)]
        if gen.size and imp.size:
            curve = metrics.det(gen, imp)
            ax.plot(metrics.probit(curve.fmr), metrics.probit(curve.fnmr), label=g)
    ticks = np.array([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
    ax.set(
        xlabel="false match rate (within group)",
        ylabel="false non-match rate",
        title=f"DET per group: {modality}",
        xticks=metrics.probit(ticks),
        yticks=metrics.probit(ticks),
        xlim=metrics.probit(np.array([5e-5, 0.6])),
        ylim=metrics.probit(np.array([5e-5, 0.6])),
    )
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.set_yticklabels([f"{t:g}" for t in ticks])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = f"det_groups_{''.join(c if c.isalnum() else '_' for c in modality)}.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def _fmt(value: Any, ci: Any = None) -> str:
    if value is None:
        return "n/a"
    text = f"{value:.4f}"
    return text + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _tables(result: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of one modality's result, shared by markdown and HTML."""
    groups = result["groups"]
    out = []
    for name, t in result["thresholds"].items():
        head = ["group", "people", "FNMR", "FMR within", "FMR across", "genuine", "impostors"]
        rows = []
        for g, info in groups.items():
            r = info["at_fmr"][name]
            c = r["comparisons"]
            rows.append(
                [g, str(info["people"])]
                + [_fmt(r[m], r[f"{m}_ci"]) for m in METRICS]
                + [str(c["genuine"]), str(c["impostor_within"] + c["impostor_across"])]
            )
        ratios = result["ratios"][name]
        rows.append(["max/min", ""] + [_fmt(ratios[m]) for m in METRICS] + ["", ""])
        out.append((f"Global threshold {t:.4f} (FMR = {name} on all impostors)", head, rows))
    head = ["group", "FPIR", "non-mated searches", "FNIR", "mated searches"]
    rows = []
    for g, info in groups.items():
        o = info["open_set"]
        rows.append(
            [g, _fmt(o["fpir"], o["fpir_ci"]), str(o["fpir_searches"])]
            + [_fmt(o["fnir"], o["fnir_ci"]), str(o["fnir_searches"])]
        )
    ratios = result["ratios"]["open_set"]
    rows.append(["max/min", _fmt(ratios["fpir"]), "", _fmt(ratios["fnir"]), ""])
    title = f"Open set at the operator's threshold {result['operator_threshold']:.4f}"
    out.append((title, head, rows))
    return out


def write_group_report(
    table: LabelledScores,
    groups: dict[str, str],
    out: str | Path,
    operator_threshold: float | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """groups.md, groups.html, groups.json and a DET plot per modality under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {
        m: group_differentials(table, m, groups, operator_threshold, n_boot) for m in table.scores
    }
    note = (
        "Rates with 95 % intervals from a bootstrap over people; thresholds are global. "
        "max/min is n/a where a group has no figure or the lowest rate is 0."
    )
    md, page = ["# Error rates per group", "", note, ""], []
    for modality, result in results.items():
        plot = _det_plot(table, modality, groups, out)
        result["det_plot"] = plot
        md += [f"## {modality}", ""]
        page.append(f"<h2>{html.escape(modality)}</h2>")
        if result["ungrouped_people"]:
            text = f"{result['ungrouped_people']} people have no group and are left out."
            md += [text, ""]
            page.append(f"<p>{html.escape(text)}</p>")
        for title, head, rows in _tables(result):
            md += [f"### {title}", "", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            md += ["| " + " | ".join(r) + " |" for r in rows] + [""]
            cells = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
            )
            page.append(
                f"<h3>{html.escape(title)}</h3><table border='1'><tr>"
                + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                + f"</tr>{cells}</table>"
            )
        md += [f"![DET per group]({plot})", ""]
        page.append(f"<p><img src='{html.escape(plot)}' alt='DET per group'></p>")
    (out / "groups.md").write_text("\n".join(md))
    (out / "groups.html").write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>Error rates per group</title>"
        f"</head><body><h1>Error rates per group</h1><p>{html.escape(note)}</p>"
        + "".join(page)
        + "</body></html>"
    )
    (out / "groups.json").write_text(json.dumps(results, indent=2) + "\n")
    return results
