"""CASIA-B as the shared data holds it, and the standard cross-view protocol behind its figures.

The data (`../shared/data/casiab`, see its README) is one bit-packed `.npz` per subject, keys
`<condition>_<view>`, each (T, 64, 8) uint8 packed along the width. Sequences come out as
`SilhouetteSequence`s (0/255 frames), the item the tracker produces, so training, evaluation and
the pipeline all feed the extractors the same thing.

The protocol follows OpenGait's `evaluate_indoor_dataset`: for every (probe view, gallery view)
pair, each probe sequence takes the label of its nearest gallery sequence; the identical-view
column is dropped and the remaining 10 are averaged per probe view, then over the 11 views.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from biofuse.fusion.metrics import cmc
from biofuse.modalities.items import SilhouetteSequence

VIEWS = tuple(f"{a:03d}" for a in range(0, 181, 18))
CONDITIONS = tuple([f"nm-{i:02d}" for i in range(1, 7)] + ["bg-01", "bg-02", "cl-01", "cl-02"])
TRAIN_SUBJECTS = tuple(f"{i:03d}" for i in range(1, 75))
TEST_SUBJECTS = tuple(f"{i:03d}" for i in range(75, 125))
GALLERY_CONDITIONS = ("nm-01", "nm-02", "nm-03", "nm-04")
PROBE_CONDITIONS = {"NM": ("nm-05", "nm-06"), "BG": ("bg-01", "bg-02"), "CL": ("cl-01", "cl-02")}


@dataclass(frozen=True)
class SequenceLabel:
    """Where a CASIA-B sequence comes from: subject, walking condition, camera view."""

    subject: str
    condition: str
    view: str

    @property
    def key(self) -> str:
        return f"casiab:{self.subject}/{self.condition}/{self.view}"


def subject_file(root: Path, subject: str) -> Path:
    path = Path(root) / f"{subject}.npz"
    if not path.is_file():
        raise FileNotFoundError(
            f"CASIA-B subject file {path} is missing; point BIOFUSE_SHARED_DATA at the folder "
            "that holds casiab/ (see ../shared/data/casiab/README.md)"
        )
    return path


def read_subject(root: Path, subject: str) -> dict[tuple[str, str], np.ndarray]:
    """All of one subject's sequences, still bit-packed: (condition, view) -> (T, 64, 8)."""
    with np.load(subject_file(root, subject), allow_pickle=False) as z:
        return {tuple(k.split("_")): z[k] for k in z.files}  # type: ignore[misc]


def unpack(packed: np.ndarray) -> np.ndarray:
    """(T, 64, 8) packed bits -> (T, 64, 64) uint8 0/255, the tracker's silhouette format."""
    return np.unpackbits(packed, axis=-1) * np.uint8(255)


def iter_sequences(
    root: Path,
    subjects: Iterable[str],
    conditions: Sequence[str] = CONDITIONS,
) -> Iterator[tuple[SequenceLabel, SilhouetteSequence]]:
    """Every stored sequence of the subjects in the given conditions, in file order."""
    wanted = set(conditions)
    for subject in subjects:
        for (condition, view), packed in sorted(read_subject(root, subject).items()):
            if condition in wanted:
                label = SequenceLabel(subject, condition, view)
                yield label, SilhouetteSequence(label.key, unpack(packed))


def data_sha256(root: Path, subjects: Iterable[str]) -> str:
    """sha256 over the subject files used (name + file digest each), the training data's id."""
    digest = hashlib.sha256()
    for subject in sorted(subjects):
        path = subject_file(root, subject)
        digest.update(f"{path.name}:{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ProtocolResult:
    """Rank-1 (%) per condition: the 11x11 (probe view x gallery view) table and its summary."""

    tables: dict[str, np.ndarray]  # condition -> (11, 11), NaN where no probe exists

    @property
    def per_probe_view(self) -> dict[str, np.ndarray]:
        """Mean over the 10 other gallery views (OpenGait's `de_diag`)."""
        out = {}
        for name, table in self.tables.items():
            off = table.copy()
            np.fill_diagonal(off, np.nan)
            out[name] = np.nanmean(off, axis=1)
        return out

    @property
    def rank1(self) -> dict[str, float]:
        """The published figure: cross-view rank-1 averaged over the 11 probe views."""
        return {k: float(np.nanmean(v)) for k, v in self.per_probe_view.items()}

    @property
    def identical_view(self) -> dict[str, float]:
        return {k: float(np.nanmean(np.diag(t))) for k, t in self.tables.items()}


def rank1_table(
    vectors: np.ndarray,
    labels: Sequence[SequenceLabel],
    similarity: Callable[[np.ndarray, np.ndarray], np.ndarray],
    probe_conditions: dict[str, tuple[str, ...]] = PROBE_CONDITIONS,
    gallery_conditions: Sequence[str] = GALLERY_CONDITIONS,
) -> ProtocolResult:
    """Rank-1 of every probe view against every gallery view, per probe condition.

    `vectors[i]` embeds `labels[i]`; `similarity(probe, gallery)` gives a (n, m) matrix,
    larger = more alike. A probe's nearest gallery sequence decides; with several gallery
    sequences per subject that is the subject's best score, which
    `biofuse.fusion.metrics.cmc` ranks.
    """
    subjects = np.array([lab.subject for lab in labels])
    views = np.array([lab.view for lab in labels])
    conditions = np.array([lab.condition for lab in labels])
    in_gallery = np.isin(conditions, list(gallery_conditions))
    tables = {}
    for name, probe_conds in probe_conditions.items():
        table = np.full((len(VIEWS), len(VIEWS)), np.nan)
        in_probe = np.isin(conditions, list(probe_conds))
        for i, probe_view in enumerate(VIEWS):
            probe_idx = np.flatnonzero(in_probe & (views == probe_view))
            if probe_idx.size == 0:
                continue
            for j, gallery_view in enumerate(VIEWS):
                gallery_idx = np.flatnonzero(in_gallery & (views == gallery_view))
                if gallery_idx.size == 0:
                    continue
                sim = similarity(vectors[probe_idx], vectors[gallery_idx])
                ids, column = np.unique(subjects[gallery_idx], return_inverse=True)
                per_subject = np.full((len(probe_idx), len(ids)), -np.inf)
                np.maximum.at(per_subject.T, column, sim.T)
                known = np.isin(subjects[probe_idx], ids)  # closed set, as OpenGait assumes
                if not known.any():
                    continue
                true = np.searchsorted(ids, subjects[probe_idx][known])
                hits = cmc(per_subject[known], true, 1)[0] * known.sum()
                table[i, j] = 100.0 * hits / len(probe_idx)  # unknown probes count as misses
        tables[name] = table
    return ProtocolResult(tables)


def cosine_similarity(probe: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Cosine of unit rows (the GEI and compact models' metric)."""
    return probe @ gallery.T
