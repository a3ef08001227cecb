"""Error rates per gender on lfw-dev through the production face path (`report --groups`).

Every lfw-dev image goes through `biofuse.flows.models.FaceFrameAnalyzer` as a video frame does
(largest face per photo). The gallery is the first photo with a face of each person who has
two or more; every other photo is a probe searched against the whole gallery: mated when
its person is enrolled, non-mated otherwise (people with one photo). A probe with no face
scores -1 against everyone (a missed face is a non-match). The scores then go through
`biofuse.fusion.demographics` exactly as `biofuse report --groups` runs it, with the genders of
`lfw-dev/gender.tsv`.

    .venv/bin/python benchmarks/demographics.py            # dlib-resnet (the default)
    .venv/bin/python benchmarks/demographics.py --home ~/.biofuse --models dlib-resnet adaface-ir101

With `--widths` (default 24 16) the same probes are also seen small: each photo shrunk so its
face is W px wide in a noisy 640x480 frame (as benchmarks/face_distance.py makes them); a face
the detector misses scores -1 (a non-match). A system that fails at a distance for one group
only is still unfair, so each size band gets its own table.

Writes benchmarks/results/demographics.{md,json} and, per model and size band, the report
folder benchmarks/results/demographics/<model>[@Wpx]/ (groups.md/html/json, DET plot).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

from biofuse.flows.models import FaceFrameAnalyzer  # noqa: E402
from biofuse.fusion.demographics import read_groups, write_group_report  # noqa: E402
from biofuse.fusion.report import LabelledScores  # noqa: E402
from face_distance import IOU_MATCH, iou, make_frame  # noqa: E402
from lfw_dlib import decode_rgb, write_atomic  # noqa: E402
from lfw_pipeline import FRAMES_PER_CALL, NO_FACE_SCORE, run_model  # noqa: E402

from biofuse.config import load_settings, shared_data_dir  # noqa: E402
from biofuse.errors import ModelMissingError  # noqa: E402


def search_table(
    vectors: dict[str, np.ndarray | None],
    model: str,
    probe_vectors: dict[str, np.ndarray | None] | None = None,
) -> LabelledScores:
    """Gallery: each multi-photo person's first photo with a face; probes: all the rest
    (their `probe_vectors` where given: the same photos seen small, at a distance)."""
    by_person: dict[str, list[str]] = defaultdict(list)
    for rel in sorted(vectors):
        by_person[rel.split("/")[-2]].append(rel)
    gallery: dict[str, str] = {}
    for person, photos in by_person.items():
        with_face = [p for p in photos if vectors[p] is not None]
        if len(photos) >= 2 and with_face:
            gallery[person] = with_face[0]
    identities = sorted(gallery)
    g = np.stack([vectors[gallery[n]] for n in identities])
    probes, rows, truth = [], [], []
    column = {n: i for i, n in enumerate(identities)}
    for person, photos in sorted(by_person.items()):
        for rel in photos:
            if gallery.get(person) == rel:
                continue
            v = (probe_vectors or vectors)[rel]
            rows.append(np.full(len(identities), NO_FACE_SCORE) if v is None else g @ v)
            # a non-mated probe is named by its person so the groups file finds its gender
            probes.append(rel if person in column else person)
            truth.append(column.get(person, -1))
    return LabelledScores(
        probes,
        identities,
        {model: np.stack(rows).astype(np.float64)},
        {model: np.full(len(probes), np.nan)},
        np.array(truth),
    )


def small_faces(
    analyzer: FaceFrameAnalyzer, lfw: Path, images: list[str], width: int, seed: int = 0
) -> dict[str, np.ndarray | None]:
    """Each photo's face shrunk to `width` px in a noisy 640x480 frame (the distance ladder of
    face_distance.py); its embedding when the detector finds that face (IoU >= 0.5), else None."""
    out: dict[str, np.ndarray | None] = {}
    for start in range(0, len(images), FRAMES_PER_CALL):
        names = images[start : start + FRAMES_PER_CALL]
        framed = [
            make_frame(
                decode_rgb(lfw / rel), width, np.random.default_rng([seed, width, start + k])
            )
            for k, rel in enumerate(names)
        ]
        for rel, (_, box), faces in zip(
            names, framed, analyzer.analyze([f for f, _ in framed]), strict=True
        ):
            overlaps = [iou(tuple(b), box) for b in faces.boxes]
            best = int(np.argmax(overlaps)) if overlaps else -1
            hit = best >= 0 and overlaps[best] >= IOU_MATCH
            out[rel] = faces.vectors[best] if hit else None
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="shared data folder")
    parser.add_argument("--home", type=Path, default=None, help="biofuse home (model weights)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--models", nargs="*", default=["dlib-resnet"])
    parser.add_argument("--boot", type=int, default=1000, help="bootstrap draws over people")
    parser.add_argument(
        "--widths",
        type=int,
        nargs="*",
        default=[24, 16],
        help="face size bands: probes shrunk to W px in 640x480 frames (face_distance.py)",
    )
    args = parser.parse_args(argv)

    lfw = (args.data or shared_data_dir()) / "lfw-dev"
    if not (lfw / "gender.tsv").is_file():
        print(f"lfw-dev/gender.tsv not found under {lfw.parent}", file=sys.stderr)
        return 2
    groups = read_groups(lfw / "gender.tsv")
    images = sorted(str(p.relative_to(lfw)) for p in (lfw / "images").rglob("*.jpg"))
    summary: dict = {"images": len(images), "people": len(groups), "models": {}}
    for name in args.models:
        settings = load_settings(home=args.home, face_model=name)
        try:
            analyzer = FaceFrameAnalyzer(settings)
        except ModelMissingError:
            summary["models"][name] = {"status": "weights not installed"}
            continue
        analyzer.prepare("cpu")
        t0 = time.perf_counter()
        vectors = run_model(analyzer, lfw, images)["vectors"]
        bands: list[tuple[str, dict | None]] = [(name, None)]
        for width in args.widths:
            bands.append((f"{name}@{width}px", small_faces(analyzer, lfw, images, width)))
        for label, probe_vectors in bands:
            table = search_table(vectors, label, probe_vectors)
            folder = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
            result = write_group_report(
                table, groups, args.out / "demographics" / folder, None, args.boot
            )
            summary["models"][label] = {
                "status": "ok",
                "model_id": analyzer.model_id,
                "seconds": time.perf_counter() - t0,
                "images_without_face": sum(v is None for v in (probe_vectors or vectors).values()),
                "gallery": len(table.identities),
                "probes": len(table.probes),
                "mated_probes": int((table.true_index >= 0).sum()),
                "report": f"demographics/{folder}/groups.md",
                **result[label],
            }
            print(f"{label}: done", file=sys.stderr)
    summary["machine"] = {"cpus": os.cpu_count(), "loadavg_1min": os.getloadavg()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    write_atomic(args.out / "demographics.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(args.out / "demographics.md", markdown(summary))
    print(markdown(summary))
    return 0


def _pct(v: float | None, ci: list | None = None) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f} %" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")


def markdown(s: dict) -> str:
    lines = [
        "# Error rates by gender on lfw-dev, through the production face path",
        "",
        "Written by `benchmarks/demographics.py`; do not edit by hand. "
        f"{s['images']} photos of {s['people']} people (`lfw-dev/gender.tsv`). Thresholds are "
        "global (set on all impostor comparisons); intervals are 95 % from a bootstrap over "
        "people. FMR within: impostors of the same gender; across: of the other gender.",
        "",
    ]
    for name, m in s["models"].items():
        if m["status"] != "ok":
            lines += [f"## {name}: {m['status']}", ""]
            continue
        lines += [
            f"## {name} (`{m['model_id']}`)",
            "",
            f"Gallery {m['gallery']} people; {m['probes']} probes ({m['mated_probes']} mated); "
            f"{m['images_without_face']} photos without a face found. Full tables and the "
            f"DET plot per group: [{m['report']}]({m['report']}).",
            "",
            "| FMR target | threshold | group | people | FNMR | FMR within | FMR across |",
            "|---|---|---|---|---|---|---|",
        ]
        for target, t in m["thresholds"].items():
            for g, info in m["groups"].items():
                r = info["at_fmr"][target]
                lines.append(
                    f"| {target} | {t:.4f} | {g} | {info['people']} | "
                    f"{_pct(r['fnmr'], r['fnmr_ci'])} | {_pct(r['fmr_within'], r['fmr_within_ci'])}"
                    f" | {_pct(r['fmr_across'], r['fmr_across_ci'])} |"
                )
            ratios = m["ratios"][target]
            cells = " | ".join(
                "n/a" if ratios[k] is None else f"{ratios[k]:.2f}×"
                for k in ("fnmr", "fmr_within", "fmr_across")
            )
            lines.append(f"| {target} | | max/min | | {cells} |")
        lines += [
            "",
            "Open set at the threshold where 1 % of all non-mated searches return a candidate "
            f"({m['operator_threshold']:.4f}):",
            "",
            "| group | FPIR | FNIR |",
            "|---|---|---|",
        ]
        for g, info in m["groups"].items():
            o = info["open_set"]
            lines.append(
                f"| {g} | {_pct(o['fpir'], o['fpir_ci'])} | {_pct(o['fnir'], o['fnir_ci'])} |"
            )
        lines.append("")
    lines.append(
        f"Machine: {s['machine']['cpus']} CPUs shared, load {s['machine']['loadavg_1min']:.1f}."
    )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
