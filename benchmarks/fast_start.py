"""`biofuse process` when there is nothing to do: wall time of the command, cold and warm.

Cases, each run as a fresh `python -m biofuse` process (what an operator types):
  * an empty folder;
  * an archive already processed: the shared evaluation videos copied under /tmp, their
    catalog rows marked done (the state a finished `process` leaves; marking them spares the
    benchmark minutes of model work that has no part in the figure);
  * the same archive through the archive flow as before this change (Ray and Prefect
    started first), for comparison (`--no-baseline` skips it).
"cold" is the first run in a new biofuse home (catalog created and migrated, Prefect home
made); "warm" the median of the next --repeats runs. The OS file cache is not dropped (no
root needed), so cold here means a cold home, not a cold disk.

    nice -n 10 .venv/bin/python benchmarks/fast_start.py
Writes benchmarks/results/fast_start.{json,md}; everything else stays under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))


def run(home: Path, *args: str) -> tuple[float, str]:
    env = {**os.environ, "BIOFUSE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_HOME", None)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "biofuse", *args], env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"biofuse {' '.join(args)} failed: {done.stdout}{done.stderr}")
    return elapsed, done.stdout.strip().splitlines()[-1]


def case(home: Path, archive: Path, repeats: int) -> dict:
    cold, said = run(home, "process", str(archive))
    warm = [run(home, "process", str(archive))[0] for _ in range(repeats)]
    return {
        "cold_s": round(cold, 2),
        "warm_s": round(statistics.median(warm), 2),
        "warm_runs": [round(w, 2) for w in warm],
        "output": said,
    }


def mark_done(home: Path, archive: Path) -> int:
    from biofuse import media
    from biofuse.catalog import DONE, Catalog
    from biofuse.config import load_settings

    catalog = Catalog(load_settings(home=str(home)).catalog_url)
    digests = {media.content_hash(p): p for p in sorted(archive.iterdir())}
    for digest, path in digests.items():
        video = catalog.register_video(digest, str(path), path.stat().st_size)
        catalog.update_video(video.id, status=DONE)
    catalog.engine.dispose()
    return len(digests)


def baseline(home: Path, archive: Path) -> float:
    """The archive flow as `process` ran it before: Ray, then the Prefect flow."""
    code = (
        "import time; t = time.perf_counter()\n"
        "from biofuse.cli import _quiet_services, _prefect_home\n"
        "from biofuse.config import load_settings\n"
        "_quiet_services(); s = load_settings(); _prefect_home(s.home)\n"
        "from biofuse.flows.actors import ensure_ray\n"
        "from biofuse.flows.archive import run_process_archive\n"
        "ensure_ray(s)\n"
        f"out = run_process_archive({str(archive)!r})\n"
        "assert out['processed'] == 0 and out['skipped'] == out['videos'], out\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, "BIOFUSE_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_HOME", None)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--videos", type=Path, default=None, help="default: shared data/video")
    args = parser.parse_args()
    from biofuse.config import shared_data_dir

    videos = args.videos or shared_data_dir() / "video"
    result: dict = {"cases": {}}
    with tempfile.TemporaryDirectory(prefix="biofuse-fast-start-") as tmp:
        tmp_path = Path(tmp)
        empty = tmp_path / "empty"
        empty.mkdir()
        result["cases"]["empty folder"] = case(tmp_path / "home-empty", empty, args.repeats)
        archive = tmp_path / "archive"
        archive.mkdir()
        for source in sorted(videos.glob("*.mp4")) + sorted(videos.glob("*.avi")):
            shutil.copy(source, archive / source.name)
        home = tmp_path / "home-done"
        n = mark_done(home, archive)
        size = sum(p.stat().st_size for p in archive.iterdir())
        result["cases"][f"archive already processed ({n} videos, {size / 1e6:.0f} MB)"] = case(
            home, archive, args.repeats
        )
        if not args.no_baseline:
            result["baseline_flow_s"] = round(baseline(home, archive), 1)
    result["machine"] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
    }
    result["command"] = "nice -n 10 .venv/bin/python benchmarks/fast_start.py"
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fast_start.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "fast_start.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [
        "# `biofuse process` with nothing to do",
        "",
        f"Command: `{r['command']}`. Machine: {r['machine']['cores']} cores, load average "
        f"{r['machine']['load_average_at_end']} at the end (shared: upper bounds). Wall time "
        "of a fresh `python -m biofuse process ARCHIVE`; cold = first run in a new home, "
        "warm = median of the next runs. Goal: 5 s.",
        "",
        "| case | cold s | warm s | says |",
        "|---|---|---|---|",
    ]
    for name, c in r["cases"].items():
        lines.append(f"| {name} | {c['cold_s']} | {c['warm_s']} | {c['output']} |")
    if "baseline_flow_s" in r:
        lines += [
            "",
            f"Before: the same processed archive through the archive flow (Ray and Prefect "
            f"started first, as `process` did): {r['baseline_flow_s']} s.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
