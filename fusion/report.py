"""Score files -> labelled score tables -> figures (ROC, DET, CMC, histograms) and a summary.

`biofuse report` and `biofuse calibrate` both start from `labelled_tables`: one (probe x
identity) table per modality, NaN where a probe has no score, and each probe's true gallery
column (-1 for a probe of someone not enrolled: a non-mated search).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.fusion import metrics
from biofuse.fusion.decide import leave_own_out
from biofuse.fusion.scorefiles import ScoreRow, Trial, read_four_column, read_score_csv

FARS = (1e-2, 1e-3)
TARGET_FPIR = 1e-2


@dataclass
class LabelledScores:
    probes: list[str]
    identities: list[str]
    scores: dict[str, np.ndarray]  # modality -> (P, I), NaN = no score
    quality: dict[str, np.ndarray]  # modality -> (P,), NaN = unknown
    true_index: np.ndarray  # (P,) gallery column of the probe's identity, -1 if not enrolled


def rows_from_trials(trials: list[Trial], modality: str = "score") -> list[ScoreRow]:
    """bob 4-column trials as score rows (the label is claimed_id == real_id)."""
    return [ScoreRow(t.probe, t.claimed_id, modality, t.score, None, t.genuine) for t in trials]


def read_rows(path: str | Path) -> list[ScoreRow]:
    """A score CSV (header starting `probe,`) or a bob 4-column file, told apart by content."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline()
        if first.startswith("probe,"):
            return read_score_csv(path)
        return rows_from_trials(read_four_column(path))
    except UnicodeDecodeError:  # a video or another binary file given by mistake
        raise ValueError(f"{path}: not a score file (binary data, not UTF-8 text)") from None
    except ValueError as exc:  # every parse error names the file it came from
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: {exc}") from exc


def labelled_tables(rows: list[ScoreRow]) -> LabelledScores:
    """Pivot rows into tables; every probe must have labels, at most one of them true."""
    probes = sorted({r.probe for r in rows})
    identities = sorted({r.identity for r in rows})
    modalities = sorted({r.modality for r in rows})
    pi = {p: i for i, p in enumerate(probes)}
    ii = {n: i for i, n in enumerate(identities)}
    scores = {m: np.full((len(probes), len(identities)), np.nan) for m in modalities}
    quality = {m: np.full(len(probes), np.nan) for m in modalities}
    truth = np.full(len(probes), -1)
    for r in rows:
        if r.label is None:
            raise ValueError(
                f"row {r.probe!r} vs {r.identity!r} has no label; labelled scores are needed "
                "(add the `label` column, or use a 4-column file)"
            )
        p = pi[r.probe]
        scores[r.modality][p, ii[r.identity]] = r.score
        if r.quality is not None:
            quality[r.modality][p] = r.quality
        if r.label:
            if truth[p] not in (-1, ii[r.identity]):
                raise ValueError(f"probe {r.probe!r} is labelled as two identities")
            truth[p] = ii[r.identity]
    return LabelledScores(probes, identities, scores, quality, truth)


def summarise(fused: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    """Verification and identification figures of one (P, I) table (NaN = not compared)."""
    mated = truth >= 0
    labels = np.zeros(fused.shape, bool)
    labels[np.flatnonzero(mated), truth[mated]] = True
    have = ~np.isnan(fused)
    gen, imp = fused[have & labels], fused[have & ~labels]
    out: dict[str, Any] = {"genuine": int(gen.size), "impostor": int(imp.size)}
    if gen.size and imp.size:
        out["eer"] = metrics.eer(gen, imp)
        for far in FARS:
            out[f"tar_at_far_{far:g}"] = metrics.tar_at_far(gen, imp, far)
    full = have.all(axis=1)  # identification needs the probe compared with everyone
    m_rows = np.flatnonzero(mated & full)
    if m_rows.size and fused.shape[1] > 1:
        out["mated_searches"] = int(m_rows.size)
        out["rank1"] = float(metrics.cmc(fused[m_rows], truth[m_rows], 1)[0])
        n_rows = np.flatnonzero(~mated & full)
        if n_rows.size:
            nonmated, how = fused[n_rows], "non-mated probes"
        else:
            nonmated, how = leave_own_out(fused[m_rows], truth[m_rows]), "leave-own-out"
        res = metrics.fnir_at_fpir(fused[m_rows], truth[m_rows], nonmated, TARGET_FPIR)
        out[f"fnir_at_fpir_{TARGET_FPIR:g}"] = res.fnir
        out["nonmated_searches"] = {"count": int(len(nonmated)), "from": how}
    return out


def _plots(series: dict[str, np.ndarray], truth: np.ndarray, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mated = truth >= 0
    files = []
    figs = {name: plt.subplots(figsize=(5.5, 4.5)) for name in ("roc", "det", "cmc")}
    hist_fig, hist_axes = plt.subplots(
        1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False
    )
    ticks = np.array([1e-4, 1e-3, 1e-2, 0.05, 0.2, 0.5])
    for k, (name, table) in enumerate(series.items()):
        labels = np.zeros(table.shape, bool)
        labels[np.flatnonzero(mated), truth[mated]] = True
        have = ~np.isnan(table)
        gen, imp = table[have & labels], table[have & ~labels]
        if gen.size and imp.size:
            curve = metrics.roc(gen, imp)
            figs["roc"][1].semilogx(np.maximum(curve.far, 1e-5), curve.tar, label=name)
            d = metrics.det(gen, imp)
            figs["det"][1].plot(metrics.probit(d.fmr), metrics.probit(d.fnmr), label=name)
            ax = hist_axes[0, k]
            bins = np.linspace(min(gen.min(), imp.min()), max(gen.max(), imp.max()), 40)
            ax.hist(imp, bins, alpha=0.6, density=True, label="impostor")
            ax.hist(gen, bins, alpha=0.6, density=True, label="genuine")
            ax.set_title(name)
            ax.legend()
        rows = np.flatnonzero(mated & have.all(axis=1))
        if rows.size:
            max_rank = min(10, table.shape[1])
            ranks = np.arange(1, max_rank + 1)
            figs["cmc"][1].plot(
                ranks, metrics.cmc(table[rows], truth[rows], max_rank), "o-", label=name
            )
    figs["roc"][1].set(xlabel="FAR", ylabel="TAR", title="ROC")
    figs["det"][1].set(
        xlabel="false match rate",
        ylabel="false non-match rate",
        title="DET (probit axes)",
        xticks=metrics.probit(ticks),
        yticks=metrics.probit(ticks),
        xlim=metrics.probit(np.array([5e-5, 0.6])),
        ylim=metrics.probit(np.array([5e-5, 0.6])),
    )
    figs["det"][1].set_xticklabels([f"{t:g}" for t in ticks])
    figs["det"][1].set_yticklabels([f"{t:g}" for t in ticks])
    figs["cmc"][1].set(xlabel="rank", ylabel="identification rate", title="CMC")
    for name, (fig, ax) in figs.items():
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=110)
        plt.close(fig)
        files.append(f"{name}.png")
    hist_fig.tight_layout()
    hist_fig.savefig(out / "histograms.png", dpi=110)
    plt.close(hist_fig)
    return files + ["histograms.png"]


def write_report(
    scores: LabelledScores, out: str | Path, extra: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Plots and a markdown + HTML summary of every modality (and `extra` fused tables)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    series = {**scores.scores, **(extra or {})}
    summary = {name: summarise(t, scores.true_index) for name, t in series.items()}
    figures = _plots(series, scores.true_index, out)
    keys = ["genuine", "impostor", "eer"] + [f"tar_at_far_{f:g}" for f in FARS]
    keys += ["rank1", f"fnir_at_fpir_{TARGET_FPIR:g}"]
    head = f"{len(scores.probes)} probes, {len(scores.identities)} identities, " + (
        f"{int((scores.true_index < 0).sum())} probes of people not enrolled"
    )

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    rows = [[name] + [cell(s.get(k)) for k in keys] for name, s in summary.items()]
    md = ["# Score report", "", head, "", "| scores | " + " | ".join(keys) + " |"]
    md.append("|---" * (len(keys) + 1) + "|")
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md += ["", *[f"![{f}]({f})" for f in figures], ""]
    (out / "report.md").write_text("\n".join(md))
    table = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows
    )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Score report</title></head>"
        f"<body><h1>Score report</h1><p>{html.escape(head)}</p><table border='1'>"
        "<tr><th>scores</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>"
        f"{table}</table>" + "".join(f"<p><img src='{f}'></p>" for f in figures) + "</body></html>"
    )
    (out / "report.html").write_text(page)
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
