"""Archive throughput: the real `process_archive` flow against the bare model calls it makes.

Builds the sample archive (biofuse.sample_archive, from ../shared/data), then measures

(a) end to end: `biofuse.flows.archive.run_process_archive` (Prefect flow, Ray actors, catalog, Zarr
    store), twice in one process: a *cold* run (Prefect's local API, Ray and the model
    actors start) and a *warm* run on a fresh home (new catalog and store, so every video
    is processed again) that reuses the running Ray session, the loaded actors and the
    Prefect API. The cold run's start-up is also cut out from the catalog: each finished
    video's `updated_at - processing_s` is when its task started.
(b) bare model time for the same work in one process, no Prefect or Ray: the same videos
    decoded with `media.iter_frames` at `face_fps` in batches of `FRAMES_PER_CALL`, timing
    only `FaceFrameAnalyzer.analyze`, and for the audio only VAD + `VoiceEmbedder.embed`.
(c) the ratio of (a) to (b): what orchestration, decoding, I/O and waiting add.

    .venv/bin/python benchmarks/archive_throughput.py [--threads 1]

Writes benchmarks/results/archive_throughput.json and .md. Data: $BIOFUSE_SHARED_DATA, else
`shared/data` beside the repository.

`--video FILE` measures an archive of that one video instead (end to end only, cold and warm
runs), with `--modalities` (e.g. face,voice,gait,body: person tracks, gait and body) and
`--person-detector`; it writes results/archive_throughput_<stem>.{json,md}:

    .venv/bin/python benchmarks/archive_throughput.py \
        --video ../shared/data/video/opencv_vtest_pedestrians.avi --modalities face,voice,gait,body
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from biofuse.config import shared_data_dir  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def quiet_prefect(scratch: Path) -> None:
    """A throw-away Prefect home and no telemetry: must run before prefect is imported."""
    os.environ["PREFECT_HOME"] = str(scratch / "prefect")
    (scratch / "prefect").mkdir(parents=True, exist_ok=True)  # its API database lives there
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # busy host
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- (a) end to end -------------------------------------------------------------------------


def catalog_facts(home: Path) -> dict[str, Any]:
    """Per-video outcome and the processing window, read back from the run's own catalog."""
    from sqlalchemy import select

    from biofuse.catalog import DONE, Catalog, Run, Video

    catalog = Catalog(f"sqlite:///{home / 'catalog.sqlite'}")
    with catalog.session() as s:
        videos = list(s.scalars(select(Video).order_by(Video.path)))
        run = s.scalar(select(Run).where(Run.kind == "process").order_by(Run.id.desc()))
    done = [v for v in videos if v.status == DONE]
    starts = [v.updated_at.timestamp() - v.processing_s for v in done if v.processing_s]
    ends = [v.updated_at.timestamp() for v in done]
    window = max(ends) - min(starts) if done else None
    catalog.engine.dispose()
    return {
        "videos": [
            {
                "file": Path(v.path).name,
                "status": v.status,
                "duration_s": v.duration_s,
                "processing_s": v.processing_s,
                "error": (v.error or "")[:200] or None,
                "notes": v.notes,
            }
            for v in videos
        ],
        "done_video_s": sum(v.duration_s or 0.0 for v in done),
        "sum_processing_s": sum(v.processing_s or 0.0 for v in done),
        "first_task_start_to_last_done_s": window,
        "run_s": (run.finished_at - run.started_at).total_seconds()
        if run is not None and run.finished_at is not None
        else None,
    }


def end_to_end(
    archive: Path, scratch: Path, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    from biofuse.flows.archive import run_process_archive

    runs = {}
    for label in ("cold", "warm"):
        home = scratch / f"home_{label}"
        start = time.perf_counter()
        summary = run_process_archive(
            str(archive), overrides={**(overrides or {}), "home": str(home)}
        )
        wall = time.perf_counter() - start
        facts = catalog_facts(home)
        video_s = facts["done_video_s"]
        window = facts["first_task_start_to_last_done_s"]
        runs[label] = {
            "summary": summary,
            "wall_s": wall,
            "video_s": video_s,
            "video_s_per_wall_s": video_s / wall,
            "video_s_per_s_from_first_task": video_s / window if window else None,
            **facts,
        }
        print(f"{label}: {summary} in {wall:.1f} s wall, {video_s:.1f} video-s", flush=True)
    import ray

    # two names (face, voice) mean the warm run reused the cold run's actors, models loaded
    runs["ray_named_actors"] = sorted(ray.util.list_named_actors()) if ray.is_initialized() else []
    runs["ray_resources"] = ray.cluster_resources() if ray.is_initialized() else {}
    ray.shutdown()
    return runs


# -- (b) bare model calls -----------------------------------------------------------------------


def face_pass(face: Any, path: Path, fps: float) -> tuple[int, int, float, float, str | None]:
    """Frames, faces, analyze seconds and decode seconds of one video, as the pipeline batches."""
    from biofuse.flows.pipeline import FRAMES_PER_CALL

    from biofuse import media

    frames = faces = 0
    face_s = decode_s = 0.0
    note = None
    batch: list[Any] = []

    def flush() -> None:
        nonlocal face_s, frames, faces
        if batch:
            t = time.perf_counter()
            out = face.analyze([f.image for f in batch])
            face_s += time.perf_counter() - t
            frames += len(batch)
            faces += sum(len(f.boxes) for f in out)
            batch.clear()

    t = time.perf_counter()
    try:
        for frame in media.iter_frames(path, fps):
            batch.append(frame)
            if len(batch) >= FRAMES_PER_CALL:
                decode_s += time.perf_counter() - t
                flush()
                t = time.perf_counter()
    except media.DecodeInterrupted as exc:
        note = str(exc)[:200]
    decode_s += time.perf_counter() - t
    flush()
    return frames, faces, face_s, decode_s, note


def bare_models(archive: Path, home: Path, threads: int, only: set[str]) -> dict[str, Any]:
    """The model calls for the videos the flow finished (`only`), each call timed on its own."""
    import numpy as np
    import torch
    from biofuse.flows.archive import list_archive
    from biofuse.flows.models import FaceFrameAnalyzer, VoiceEmbedder
    from biofuse.modalities.voice.resemblyzer_voice import turn_segments
    from biofuse.modalities.voice.vad import detect_speech

    from biofuse import media
    from biofuse.config import load_settings
    from biofuse.errors import MediaError

    torch.set_num_threads(threads)
    settings = load_settings(None, home=str(home))
    start = time.perf_counter()
    face = FaceFrameAnalyzer(settings)
    face.prepare()
    voice = VoiceEmbedder(settings)
    voice.prepare()
    load_s = time.perf_counter() - start

    per_video = []
    totals = dict(video_s=0.0, frames=0, faces=0, face_s=0.0, decode_s=0.0, audio_s=0.0)
    totals.update(speech_s=0.0, vad_s=0.0, embed_s=0.0, segments=0)
    for path in list_archive(archive):
        row: dict[str, Any] = {"file": path.name}
        if path.name not in only:
            row["skipped"] = "not processed by the flow"
            per_video.append(row)
            continue
        try:
            info = media.probe(path)
            frames, faces, face_s, decode_s, note = face_pass(face, path, settings.face_fps)
        except MediaError as exc:
            row["skipped"] = str(exc)[:200]
            per_video.append(row)
            continue
        if note:
            row["note"] = note
        row.update(duration_s=info.duration_s, frames=frames, faces=faces, face_s=face_s)
        row["decode_s"] = decode_s
        if info.has_audio:
            try:
                samples = media.read_audio(path)
            except MediaError as exc:  # the flow notes a truncated track and skips the voice
                samples = np.zeros(0, np.float32)
                row["audio_note"] = str(exc)[:200]
            t = time.perf_counter()
            turns = detect_speech(samples, method=settings.vad, min_turn_s=settings.min_turn_s)
            segments = turn_segments(samples, turns, "bench") if turns else []
            vad_s = time.perf_counter() - t
            t = time.perf_counter()
            rows = voice.embed(segments) if segments else None
            embed_s = time.perf_counter() - t
            row.update(
                audio_s=len(samples) / 16000,
                speech_s=sum(s.duration_s for s in segments),
                segments=len(rows) if rows is not None else 0,
                vad_s=vad_s,
                embed_s=embed_s,
            )
        per_video.append(row)
        totals["video_s"] += info.duration_s
        for key in ("frames", "faces", "face_s", "decode_s", "audio_s", "speech_s", "vad_s"):
            totals[key] += row.get(key, 0)
        totals["embed_s"] += row.get("embed_s", 0.0)
        totals["segments"] += row.get("segments", 0)
        print(
            f"bare: {path.name} {face_s:.1f} s face, {row.get('embed_s', 0):.1f} s voice",
            flush=True,
        )
    model_s = totals["face_s"] + totals["vad_s"] + totals["embed_s"]
    return {
        "torch_threads": torch.get_num_threads(),
        "model_load_s": load_s,
        "videos": per_video,
        **totals,
        "model_s": model_s,
        "video_s_per_model_s": totals["video_s"] / model_s,
        "face_ms_per_frame": 1000 * totals["face_s"] / max(1, totals["frames"]),
        "voice_rtf": (totals["vad_s"] + totals["embed_s"]) / totals["audio_s"]
        if totals["audio_s"]
        else None,
        "voice_embed_rtf_per_speech_s": totals["embed_s"] / totals["speech_s"]
        if totals["speech_s"]
        else None,
        "vad_rtf": totals["vad_s"] / totals["audio_s"] if totals["audio_s"] else None,
    }


# -- report -------------------------------------------------------------------------------------


def markdown(r: dict[str, Any]) -> str:
    m, e, b, o, st = r["machine"], r["end_to_end"], r["bare"], r["overhead"], r["settings"]
    cold, warm = e["cold"], e["warm"]
    lines = [
        "# Archive throughput: `process_archive` (Prefect + Ray) vs the bare model calls",
        "",
        f"Written by `benchmarks/archive_throughput.py` on {r['date']}. Machine: {m['nproc']} "
        f"CPUs ({m['cpu_model']}), {m['mem_gib']:.0f} GiB, load average before the run "
        f"{m['loadavg_before']}; Python {m['python']}, CPU only.",
        "",
        f"Archive: the built-in sample archive ({len(warm['videos'])} files: generated 640x360 "
        "10 fps clips with speech, one without audio, one truncated, two real talking-face clips)."
        f" {warm['summary']['processed']} videos processed, {warm['summary']['failed']} failed, "
        f"{warm['video_s']:.1f} s of video. Settings (defaults): face_fps {st['face_fps']:g}, "
        f"max_parallel_videos {st['max_parallel_videos']}, batch_size {st['batch_size']}, "
        f"batch_wait_ms {st['batch_wait_ms']:g}; one face and one voice actor of "
        f"{st['num_cpus_per_actor']:g} Ray CPU each (Ray actors after both runs: "
        f"{', '.join(e['ray_named_actors'])}).",
        "",
        "## End to end",
        "",
        "| run | wall s | video-s per wall-s | from first video task: s | video-s per s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, run in (("cold (Prefect API, Ray, actors start)", cold), ("warm", warm)):
        window = run["first_task_start_to_last_done_s"]
        lines.append(
            f"| {name} | {run['wall_s']:.1f} | {run['video_s_per_wall_s']:.3f} | "
            f"{window:.1f} | {run['video_s_per_s_from_first_task']:.3f} |"
        )
    lines += [
        "",
        f"- Start-up: cold wall - warm wall = **{cold['wall_s'] - warm['wall_s']:.1f} s** "
        f"(Prefect's local API, Ray init, the model actors loading their models). Cold run from "
        f"first video task to last video done: {cold['first_task_start_to_last_done_s']:.1f} s "
        "(catalog `updated_at - processing_s`).",
        f"- Warm: the second run in the same process on a fresh home (new catalog and store), "
        f"reusing Ray, the loaded actors and the Prefect API. The flow run itself (catalog "
        f"`runs`) took {warm['run_s']:.1f} s of the {warm['wall_s']:.1f} s wall.",
        "",
        "## Bare model calls (one process, no Prefect or Ray)",
        "",
        "| what | seconds | rate |",
        "| --- | --- | --- |",
        f"| face: `FaceFrameAnalyzer.analyze` ({b['frames']} frames, {b['faces']} faces) | "
        f"{b['face_s']:.1f} | {b['face_ms_per_frame']:.0f} ms/frame |",
        f"| voice: {r['settings']['vad']} VAD + cut ({b['audio_s']:.1f} s of audio) | "
        f"{b['vad_s']:.2f} | RTF {b['vad_rtf']:.4f} |",
        f"| voice: `VoiceEmbedder.embed` ({b['segments']} turns, {b['speech_s']:.1f} s speech) | "
        f"{b['embed_s']:.2f} | RTF {b['voice_embed_rtf_per_speech_s']:.3f} per speech-s |",
        f"| **all model calls** | **{b['model_s']:.1f}** | "
        f"**{b['video_s_per_model_s']:.3f} video-s per s** |",
        f"| (not counted) decode + RGB conversion at {st['face_fps']:g} fps | {b['decode_s']:.1f} "
        "| |",
        f"| (not counted) model load | {b['model_load_s']:.1f} | |",
        "",
        f"Voice real-time factor (VAD + embed) / audio seconds: **{b['voice_rtf']:.4f}**. "
        f"Torch threads: {b['torch_threads']} (the actors run with OMP_NUM_THREADS=1).",
        "",
        "## Pipeline overhead (end to end / bare model time)",
        "",
        f"- warm wall / bare model time: **{o['warm_wall_over_model']:.2f}**",
        f"- cold wall / bare model time: {o['cold_wall_over_model']:.2f}",
        f"- cold, first video task to last done / bare model time: "
        f"{o['cold_window_over_model']:.2f}",
        "",
        f"Face calls are {100 * b['face_s'] / b['model_s']:.1f} % of the bare model time; the "
        f"flow ran {st['face_actors']} face actor(s) (calls alternate between them, each "
        "batching what it receives), so it can beat one bare model loop when there are "
        "cores for them.",
        "",
        "A ratio near 1 means the flow costs little beyond the models. Below 1 is possible: "
        "the flow runs two videos at once and the face and voice actors in separate "
        "processes, so it can use both CPUs while the bare loop uses one at a time; above 1 "
        "is decoding, Prefect task and Ray call overhead, catalog and store writes, and "
        "batching waits.",
        "",
    ]
    return "\n".join(lines)


def one_video(args: argparse.Namespace) -> None:
    """End to end on an archive of one video (a link to it), with the modalities asked for."""
    scratch = Path(tempfile.mkdtemp(prefix="biofuse-throughput-"))
    quiet_prefect(scratch)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    video = Path(args.video).resolve()
    overrides: dict[str, Any] = {
        "modalities": args.modalities.split(","),
        "person_detector": args.person_detector,
        # 2 face + voice + person + gait + body actors must fit on a 2-core Ray
        "num_cpus_per_actor": 0.25,
    }
    try:
        (scratch / "archive").mkdir()
        (scratch / "archive" / video.name).symlink_to(video)
        e2e = end_to_end(scratch / "archive", scratch, overrides)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    warm, cold = e2e["warm"], e2e["cold"]
    report = {
        "benchmark": "archive_throughput",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "video": video.name,
        "overrides": overrides,
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "loadavg_before": loadavg_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "end_to_end": e2e,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = f"archive_throughput_{video.stem}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    m = report["machine"]
    lines = [
        f"# Archive throughput: one video, {args.modalities} (`benchmarks/archive_throughput.py"
        " --video`)",
        "",
        f"Written on {report['date']}. `{video.name}` ({warm['video_s']:.1f} s), modalities "
        f"{args.modalities}, person_detector {args.person_detector}, num_cpus_per_actor 0.25. "
        f"Machine: {m['nproc']} CPUs ({m['cpu_model']}) **shared with other jobs**: 1/5/15-min "
        f"load average {m['loadavg_before']} before, {m['loadavg_after']} after.",
        "",
        "| run | wall s | video-s per wall-s | video task s | video-s per task-s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, run in (("cold (Prefect, Ray, actors start)", cold), ("warm", warm)):
        window = run["first_task_start_to_last_done_s"] or float("nan")
        lines.append(
            f"| {name} | {run['wall_s']:.1f} | {run['video_s_per_wall_s']:.3f} | "
            f"{window:.1f} | {run['video_s_per_s_from_first_task'] or float('nan'):.3f} |"
        )
    notes = [v["notes"] for v in warm["videos"] if v.get("notes")]
    lines += ["", f"Video notes: {notes or 'none'}.", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the bare run")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--video", help="an archive of this one video (end to end only)")
    parser.add_argument("--modalities", default="face,voice", help="with --video")
    parser.add_argument("--person-detector", default="auto", help="with --video")
    args = parser.parse_args()
    if args.video:
        one_video(args)
        return

    data = shared_data_dir()
    if not (data / "lfw-dev").is_dir():
        raise SystemExit(f"shared data not found at {data}; set BIOFUSE_SHARED_DATA")
    scratch = Path(tempfile.mkdtemp(prefix="biofuse-throughput-"))
    quiet_prefect(scratch)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    try:
        from biofuse.config import load_settings
        from biofuse.sample_archive import build_sample_archive

        t = time.perf_counter()
        build_sample_archive(scratch, data)
        build_s = time.perf_counter() - t
        archive = scratch / "archive"
        e2e = end_to_end(archive, scratch)
        done = {v["file"] for v in e2e["warm"]["videos"] if v["status"] == "done"}
        bare = bare_models(archive, scratch / "home_bare", args.threads, done)
        settings = load_settings(None, home=str(scratch / "home_bare"))
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    model_s = bare["model_s"]
    report = {
        "benchmark": "archive_throughput",
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu_model(),
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": loadavg_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": settings.model_dump(
            include={
                "face_fps",
                "max_parallel_videos",
                "batch_size",
                "batch_wait_ms",
                "num_cpus_per_actor",
                "face_actors",
                "voice_actors",
                "face_upsample",
                "vad",
                "min_turn_s",
            }
        ),
        "sample_archive_build_s": build_s,
        "end_to_end": e2e,
        "bare": bare,
        "overhead": {
            "warm_wall_over_model": e2e["warm"]["wall_s"] / model_s,
            "cold_wall_over_model": e2e["cold"]["wall_s"] / model_s,
            "cold_window_over_model": e2e["cold"]["first_task_start_to_last_done_s"] / model_s,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "archive_throughput.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "archive_throughput.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
