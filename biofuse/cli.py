"""The `biofuse` command: process, enroll, identify, status, models, demo."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from biofuse.config import load_settings
from biofuse.errors import BiofuseError, without_path

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Model weights: list, verify, add.", no_args_is_help=True)
app.add_typer(models_app, name="models")
# Piped output (logs, CI) gets a wide console so that tables stay readable.
console = Console() if sys.stdout.isatty() else Console(width=150)


def _quiet_services() -> None:
    """Prefect's and Ray's chatter off unless the user asked for it (no network here)."""
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # no usage statistics or telemetry, and no notice about them on every run
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("PREFECT_CLOUD_ENABLE_ORCHESTRATION_TELEMETRY", "false")
    os.environ.setdefault("PREFECT_TELEMETRY_ENABLE_RESOURCE_METRICS", "false")
    # Prefect's local API gets 20 s to start by default: too little on a loaded 2-core host
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


_PREFECT_HOME_SET_HERE: list[str] = []  # PREFECT_HOME values this module chose (not the user)


def _prefect_home(home: Path) -> None:
    """Prefect's database and result storage under the biofuse home (before prefect loads)."""
    prefect_home = Path(home) / "prefect"
    with contextlib.suppress(OSError):  # Prefect makes only the last folder of the path
        prefect_home.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(prefect_home)
    _PREFECT_HOME_SET_HERE.append(str(prefect_home))


@app.callback()
def main(
    home: Path | None = typer.Option(None, help="Where the catalog, store and models live."),
    config: Path | None = typer.Option(None, help="A biofuse.toml file."),
) -> None:
    if home is not None:
        os.environ["BIOFUSE_HOME"] = str(home)
    if config is not None:
        os.environ["BIOFUSE_CONFIG"] = str(config)
    _quiet_services()
    try:  # the file, the environment and the model names, before any command starts a service
        settings = load_settings()
    except BiofuseError as exc:
        _fail(exc)
        return
    # Prefect's database and result storage hold flow parameters (identity names, paths) and
    # errors: under the biofuse home, not ~/.prefect (set before anything imports prefect)
    if os.environ.get("PREFECT_HOME", "") in ["", *_PREFECT_HOME_SET_HERE]:
        _prefect_home(settings.home)
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "false")


def _fail(exc: Exception) -> None:
    console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # one line
    raise typer.Exit(2)


def _with_progress(label: str, total: int, work: Any, done_count: Any, final: Any = None) -> Any:
    """Run `work()` in a thread while a progress bar polls `done_count()` (from the catalog).

    `final(result)` gives the bar's last (completed, total) where the work counts its units
    otherwise than `total` did (duplicate files are one video).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task(label, total=total)
        thread.start()
        while thread.is_alive():
            progress.update(bar, completed=min(total, done_count()))
            thread.join(0.5)
        if "error" not in box and final is not None:
            completed, total = final(box["result"])
            progress.update(bar, total=total)
        progress.update(bar, completed=min(total, done_count() if final is None else completed))
    if "error" in box:
        raise box["error"]
    return box["result"]


# -- process -----------------------------------------------------------------------------
@app.command()
def process(archive: Path = typer.Argument(..., help="A folder of videos (or one video).")) -> None:
    """Find the people in every video of an archive and store their evidence."""
    from biofuse import media

    began = time.perf_counter()
    try:
        paths, ignored = media.scan_videos(archive)
    except BiofuseError as exc:
        _fail(exc)
        return
    for path, reason in ignored.items():
        console.print(f"  [yellow]skipped[/] {escape(path)}: {escape(reason)}")
    total = len(paths)
    if not total:  # said at once, before Ray and Prefect start
        console.print(f"no video files in {escape(str(archive))}: processed 0 of 0 videos")
        return
    try:
        done = _already_done(paths)
    except BiofuseError as exc:
        _fail(exc)
        return
    if done is not None:  # nothing new: answered from the catalog, before Ray and Prefect
        console.print(
            f"processed 0, failed 0, already done {done} of {done} videos "
            f"in {time.perf_counter() - began:.1f} s"
        )
        if total > done:
            console.print(f"{total - done} of the {total} files repeat another file's content")
        return

    from biofuse.flows.actors import ensure_ray
    from biofuse.flows.archive import run_process_archive
    from biofuse.flows.context import Context

    try:
        ctx = Context.open()
        ensure_ray(ctx.settings)  # in the main thread: Ray installs signal handlers
        before = ctx.catalog.video_counts()
        settled = before.get("done", 0) + before.get("failed", 0)

        def finished() -> int:
            counts = ctx.catalog.video_counts()
            return counts.get("done", 0) + counts.get("failed", 0) - settled

        started = time.perf_counter()
        summary = _with_progress(
            "videos",
            total,
            lambda: run_process_archive(str(archive)),
            finished,
            lambda s: (s["videos"], s["videos"]),
        )
    except BiofuseError as exc:
        _fail(exc)
        return
    elapsed = time.perf_counter() - started
    console.print(
        f"processed {summary['processed']}, failed {summary['failed']}, already done "
        f"{summary['skipped']} of {summary['videos']} videos in {elapsed:.1f} s"
    )
    if total > summary["videos"]:
        copies = total - summary["videos"]
        console.print(f"{copies} of the {total} files repeat another file's content (one video)")
    if summary["failed"]:
        console.print("see `biofuse status` for the reasons")


def _already_done(paths: list[Path]) -> int | None:
    """The number of distinct videos when every file's content is processed already (the
    catalog's `done`), else None: then the archive flow runs, with Ray and Prefect."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from biofuse import media
    from biofuse.catalog import DONE, Catalog, Video

    # read only, no migration (alembic costs seconds): a catalog that is new or older than
    # this code fails the query, and the flow (which migrates) takes over
    catalog = Catalog(load_settings().catalog_url, upgrade=False)
    try:
        digests = set()
        for path in paths:
            try:
                digests.add(media.content_hash(path))
            except OSError:
                return None  # unreadable: the flow records why
        found = 0
        pending = sorted(digests)
        with catalog.session() as s:
            for start in range(0, len(pending), 500):
                chunk = pending[start : start + 500]
                try:
                    query = select(Video.status).where(Video.content_hash.in_(chunk))
                    statuses = list(s.scalars(query))
                except SQLAlchemyError:
                    return None
                if len(statuses) < len(chunk) or any(v != DONE for v in statuses):
                    return None
                found += len(statuses)
        return found
    finally:
        catalog.engine.dispose()


# -- enroll ------------------------------------------------------------------------------
@app.command()
def enroll(
    name: str = typer.Argument(..., help="The identity's name."),
    files: list[Path] = typer.Argument(..., help="Photos, audio recordings or videos of them."),
    strict: bool = typer.Option(
        False, "--strict", help="Enroll nothing if any file is bad (default: skip bad files)."
    ),
) -> None:
    """Add an identity's evidence to the gallery."""
    import uuid

    from biofuse.flows.actors import ensure_ray
    from biofuse.flows.gallery import ENROLL_PROGRESS, check_enrollment_files
    from biofuse.flows.gallery import enroll as enroll_flow

    missing = [str(f) for f in files if not f.exists() and not f.is_symlink()]
    if missing:
        _fail(BiofuseError(f"no such file: {', '.join(missing)}"))
    try:
        settings = load_settings()
        # every file is checked (headers, a photo's one frame) before the first is enrolled
        good, bad = check_enrollment_files([str(f) for f in files])
        for path, reason in bad.items():
            verb = "[red]bad[/]" if strict else "[yellow]skipped[/]"
            console.print(f"  {verb} {escape(path)}: {escape(reason)}")
        if bad and strict:
            raise BiofuseError(f"{len(bad)} of {len(files)} files cannot be enrolled (--strict)")
        if not good:
            console.print(f"{escape(name)}: nothing enrolled (no usable file)")
            raise typer.Exit(1)
        ensure_ray(settings)  # in the main thread: Ray installs signal handlers
        key = uuid.uuid4().hex
        report = _with_progress(
            "files",
            len(good),
            lambda: enroll_flow(name, good, progress_key=key),
            lambda: ENROLL_PROGRESS.get(key, 0),
        )
        ENROLL_PROGRESS.pop(key, None)
    except BiofuseError as exc:
        _fail(exc)
        return
    rows = sum(sum(v.values()) for v in report["files"].values())
    console.print(f"{escape(name)}: {len(report['files'])} files enrolled, {rows} new store rows")
    for path, reason in report["errors"].items():
        if path not in bad:
            console.print(f"  [yellow]skipped[/] {escape(path)}: {escape(reason)}")
    if not report["files"]:
        raise typer.Exit(1)
    if rows and report["gallery_version"] is not None:
        console.print(
            f"identify uses gallery version {report['gallery_version']}: the new evidence joins "
            "it at the next `biofuse gallery rebuild` (nightly, or run it now)"
        )


# -- identify ----------------------------------------------------------------------------
BYSTANDER = " (bystander)"


def _median_width(boxes: list[Any]) -> float:
    """Median face box width of a track; boxes are [t, x0, y0, x1, y1]."""
    widths = sorted(b[3] - b[1] for b in boxes)
    return float(widths[len(widths) // 2]) if widths else 0.0


def _expected_decisions(
    decisions: list[dict[str, Any]],
    truth: dict[str, str | None],
    names: dict[int, str],
    widths: dict[str, float],
) -> dict[str, str]:
    """The sample archive's truth per probe: a video's person is its largest face track;
    smaller faces in the same photo are bystanders, expected 'unknown'."""
    largest: dict[int, str] = {}
    for d in decisions:
        key = d["probe"]
        if key in widths and widths[key] > widths.get(largest.get(d["video_id"], ""), -1.0):
            largest[d["video_id"]] = key
    out = {}
    for d in decisions:
        person = truth.get(names.get(d["video_id"], "")) or "unknown"
        bystander = d["probe"] in widths and largest.get(d["video_id"]) != d["probe"]
        out[d["probe"]] = "unknown" + BYSTANDER if bystander else person
    return out


def print_decisions(decisions: list[dict[str, Any]], truth: dict[str, str] | None = None) -> None:
    """The decisions as a table; `truth`: the expected decision per probe key (the demo)."""
    table = Table(title="identities per probe (fused LLR = sum of calibrated modality LLRs)")
    for column in (
        "video",
        "probe",
        "decision",
        "rank: identity  fused LLR  (cosine per modality)",
    ):
        table.add_column(column, overflow="fold")
    if truth is not None:
        table.add_column("truth")
    from sqlalchemy import select

    from biofuse.catalog import Catalog, Video

    catalog = Catalog(load_settings().catalog_url)
    with catalog.session() as s:
        names = {v.id: Path(v.path).name for v in s.scalars(select(Video))}
    for d in decisions:
        lines = []
        for c in d["candidates"][:3]:
            per = c["per_modality"]
            parts = [
                f"{m} {per[m]['score']:+.2f}" if m in per else f"{m} -" for m in ("face", "voice")
            ]
            lines.append(
                f"{c['rank']}: {c['identity']}  {c['fused_llr']:+.1f}  ({' | '.join(parts)})"
            )
        style = "green" if d["decision"] != "unknown" else "yellow"
        probe = d["probe"].split(":", 1)[-1]  # the video column already names the video
        row = [  # data as Text: a name or path is never read as markup
            Text(names.get(d["video_id"], "?")),
            Text(probe),
            Text(str(d["decision"]), style=style),
            Text("\n".join(lines) or "no evidence"),
        ]
        if truth is not None:
            row.append(Text(truth.get(d["probe"], "?")))
        table.add_row(*row)
    console.print(table)


@app.command()
def identify(
    targets: list[str] = typer.Argument(
        None, help="Videos or track keys; all processed videos if none."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Rank the gallery's identities for each person seen in the targets."""
    from sqlalchemy import select

    from biofuse.catalog import Catalog, Track
    from biofuse.flows.gallery import identify as identify_flow

    keys = [t for t in targets or [] if not Path(t).exists()]
    if keys:  # refuse unknown track keys before any flow starts
        with Catalog(load_settings().catalog_url).session() as s:
            known = set(s.scalars(select(Track.key).where(Track.key.in_(keys))))
        unknown = [k for k in keys if k not in known]
        if unknown:
            _fail(BiofuseError(f"neither a file nor a known track key: {', '.join(unknown)}"))
    try:
        decisions = identify_flow(list(targets or []))
    except BiofuseError as exc:
        _fail(exc)
        return
    if as_json:
        console.print_json(json.dumps(decisions))
    else:
        print_decisions(decisions)


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds:.1f} s"


# -- status ------------------------------------------------------------------------------
@app.command()
def status(limit: int = typer.Option(20, help="How many failures and runs to list.")) -> None:
    """What was processed, what failed and why."""
    from sqlalchemy import func, select

    from biofuse.catalog import Catalog, Enrollment, Identity, Run, Track, Video

    settings = load_settings()
    catalog = Catalog(settings.catalog_url)
    counts = catalog.video_counts()
    with catalog.session() as s:
        seconds = s.scalar(select(func.sum(Video.duration_s)).where(Video.status == "done")) or 0
        n_tracks = s.scalar(select(func.count()).select_from(Track)) or 0
        n_ids = s.scalar(select(func.count()).select_from(Identity)) or 0
        n_enr = s.scalar(select(func.count()).select_from(Enrollment)) or 0
        failed = list(
            s.scalars(
                select(Video)
                .where(Video.status == "failed")
                .order_by(Video.updated_at.desc())
                .limit(limit)
            )
        )
        noted = list(
            s.scalars(
                select(Video).where(Video.notes.is_not(None)).order_by(Video.id.desc()).limit(limit)
            )
        )
        runs = list(s.scalars(select(Run).order_by(Run.id.desc()).limit(5)))
    console.print(f"home: {escape(str(settings.home))}")
    console.print(
        "videos: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"  "
        f"({_duration(seconds)} of video processed), tracks {n_tracks}, identities {n_ids} "
        f"({n_enr} enrollment rows)"
    )
    if failed:
        table = Table(title="failed videos")
        table.add_column("path", overflow="fold")
        table.add_column("attempts")
        table.add_column("reason", overflow="fold")
        for v in failed:
            reason = without_path(v.path, v.error or "")  # the path column names the file
            table.add_row(Text(v.path), str(v.attempts), Text(reason))
        console.print(table)
    if noted:
        table = Table(title="processed with notes")
        table.add_column("path", overflow="fold")
        table.add_column("note", overflow="fold")
        for v in noted:
            table.add_row(Text(v.path), Text(v.notes or ""))
        console.print(table)
    if runs:
        table = Table(title="recent runs")
        for column in ("id", "kind", "status", "started", "summary"):
            table.add_column(column, overflow="fold")
        for r in runs:
            table.add_row(
                str(r.id),
                Text(r.kind),
                Text(r.status),
                f"{r.started_at:%Y-%m-%d %H:%M:%S}",
                Text(json.dumps(r.summary)),
            )
        console.print(table)


# -- models ------------------------------------------------------------------------------
@models_app.command("list")
def models_list() -> None:
    """Every known model, whether its files are here, its licence and provenance."""
    from biofuse.registry import Registry

    settings = load_settings()
    table = Table(title=f"models (user files in {escape(str(settings.models_dir))})")
    for column in ("name", "modality", "status", "licence", "provenance"):
        table.add_column(column, overflow="fold")
    for spec, state in Registry(settings.models_dir).status():
        colour = "green" if state == "installed" else "yellow"
        table.add_row(
            spec.name, spec.modality, f"[{colour}]{state}[/]", spec.licence, spec.provenance
        )
    console.print(table)


@models_app.command("verify")
def models_verify(names: list[str] = typer.Argument(None)) -> None:
    """Re-hash installed model files and compare with the recorded sha256."""
    from biofuse.registry import Registry

    registry = Registry(load_settings().models_dir)
    targets = names or [s.name for s, state in registry.status() if state == "installed"]
    bad = 0
    for name in targets:
        try:
            resolved = registry.verify(name)
            console.print(
                f"[green]ok[/] {escape(name)}  {resolved.model_id}  sha256 {resolved.sha256}"
            )
        except BiofuseError as exc:
            bad += 1
            console.print(f"[red]bad[/] {escape(name)}: {escape(str(exc))}")
    if bad:
        raise typer.Exit(1)


@models_app.command("add")
def models_add(
    name: str,
    path: Path,
    training_set: str = typer.Option(
        "unknown",
        "--training-set",
        help="What the weights were trained on (e.g. webface12m): the file does not say, "
        "and the weights' terms of use follow it.",
    ),
) -> None:
    """Install a user-provided weight file (AdaFace .ckpt: converted once to safetensors)."""
    from biofuse.registry import Registry

    registry = Registry(load_settings().models_dir)
    try:
        resolved = registry.add(name, path, training_set=training_set)
    except BiofuseError as exc:
        _fail(exc)
        return
    record = registry.record(name)
    console.print(f"added {escape(name)} as {resolved.model_id}")
    for key in ("source_format", "depth", "training_set", "licence", "source_sha256", "sha256"):
        if key in record:
            console.print(f"  {key}: {escape(str(record[key]))}")


# -- sample archive and demo ---------------------------------------------------------------
@app.command("sample-archive")
def sample_archive(target: Path = typer.Argument(Path("demo-output"))) -> None:
    """Generate the built-in sample archive (from ../shared/data) into TARGET/archive."""
    from biofuse.sample_archive import build_sample_archive

    try:
        manifest = build_sample_archive(target)
    except BiofuseError as exc:
        _fail(exc)
        return
    console.print(
        f"{len(manifest['probes'])} videos in {escape(str(target / 'archive'))}; "
        "truth in manifest.json"
    )


@app.command()
def demo(
    workdir: Path = typer.Option(Path("demo-output"), help="Where the demo writes everything."),
) -> None:
    """The main job on the sample archive: generate, process, enroll, identify, summarise."""
    os.environ.setdefault("BIOFUSE_HOME", str(workdir.resolve() / "home"))
    settings = load_settings()
    if os.environ.get("PREFECT_HOME") in _PREFECT_HOME_SET_HERE:  # follow the demo's home
        _prefect_home(settings.home)

    from sqlalchemy import func, select

    from biofuse.catalog import Catalog, Track, Video
    from biofuse.flows.gallery import enroll as enroll_flow
    from biofuse.flows.gallery import identify as identify_flow
    from biofuse.registry import Registry
    from biofuse.sample_archive import build_sample_archive

    try:
        console.rule("1. sample archive")
        manifest = build_sample_archive(workdir)
        console.print(
            f"{len(manifest['probes'])} videos in {escape(str(workdir / 'archive'))} "
            f"({manifest['how']})"
        )
        registry = Registry(settings.models_dir)
        for spec, state in registry.status():
            if spec.modality in ("face", "voice"):
                console.print(f"  model {spec.name}: {state.split(':')[0]}")
        console.rule("2. process the archive")
        started = time.perf_counter()
        process(workdir / "archive")
        process_s = time.perf_counter() - started
        console.rule("3. enroll the gallery")
        for name, files in manifest["enroll"].items():
            report = enroll_flow(name, files)
            errors = "; ".join(f"{Path(k).name}: {v}" for k, v in report["errors"].items())
            console.print(
                f"{name}: {len(report['files'])} files"
                + (f" (skipped {errors})" if errors else ""),
                markup=False,
            )
        console.rule("4. identify every person seen")
        decisions = identify_flow([])
    except BiofuseError as exc:
        _fail(exc)
        return
    truth = {p["file"]: p["identity"] for p in manifest["probes"]}
    catalog = Catalog(settings.catalog_url)
    with catalog.session() as s:
        names = {v.id: Path(v.path).name for v in s.scalars(select(Video))}
        video_s = s.scalar(select(func.sum(Video.duration_s)).where(Video.status == "done")) or 0.0
        widths = {t.key: _median_width(t.boxes) for t in s.scalars(select(Track))}
    expected = _expected_decisions(decisions, truth, names, widths)
    print_decisions(decisions, expected)
    tracked = [d for d in decisions if d["probe"] in widths]
    main = [d for d in tracked if not expected[d["probe"]].endswith(BYSTANDER)]
    others = [d for d in tracked if expected[d["probe"]].endswith(BYSTANDER)]
    correct = sum(d["decision"] == expected[d["probe"]] for d in main)
    console.rule("summary")
    console.print(
        f"person tracks decided correctly: {correct}/{len(main)} "
        f"(open-set: enrolled people named, others 'unknown')"
    )
    if others:
        named = sum(d["decision"] != "unknown" for d in others)
        console.print(
            f"other faces inside the photos (bystanders, never enrolled): {len(others)} tracks, "
            f"{named} named as someone"
        )
    console.print(
        f"archive: {video_s:.1f} s of video processed in {process_s:.1f} s wall "
        f"({video_s / max(process_s, 1e-9):.2f} video-s per wall-s, including model start-up)"
    )
    console.print(
        "modalities that ran: "
        + ", ".join(settings.modalities)
        + " (gait and body need whole bodies in view, which the sample's pasted faces lack:"
        + " add them with BIOFUSE_MODALITIES=face,voice,gait,body)"
    )
    console.print(f"`biofuse --home {escape(str(settings.home))} status` shows what failed and why")


# -- gallery rebuild and analyst access (ops issue) ---------------------------------------------
gallery_app = typer.Typer(
    help="The versioned gallery: rebuild it, forget an identity.", no_args_is_help=True
)
app.add_typer(gallery_app, name="gallery")


@gallery_app.command("rebuild")
def gallery_rebuild(
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Bring templates to the current models, refit calibration, switch to a new version."""
    from biofuse.flows.rebuild import rebuild_gallery, report_markdown

    try:
        report = rebuild_gallery()
    except BiofuseError as exc:
        _fail(exc)
        return
    if as_json:
        console.print_json(json.dumps(report, default=str))
    else:
        console.print(report_markdown(report), markup=False)
        if report.get("path"):
            console.print(f"report: {report['path']}/report.md", markup=False)


@gallery_app.command("forget")
def gallery_forget(
    name: str = typer.Argument(..., help="The identity to erase."),
    yes: bool = typer.Option(False, "--yes", help="Confirm: this cannot be undone."),
) -> None:
    """Erase one identity everywhere: catalog rows, store rows, gallery versions, thumbnails."""
    if not yes:
        _fail(BiofuseError(f"erasing {name!r} cannot be undone: add --yes to confirm"))
    from biofuse.flows.context import Context
    from biofuse.flows.forget import forget_identity

    try:
        report = forget_identity(Context.open(), name)
    except BiofuseError as exc:
        _fail(exc)
        return
    console.print(
        f"forgot {escape(name)}: {report['enrollments']} enrollment rows, {report['store_rows']} "
        f"store rows, {report['results']} identify results, {report['gallery_versions']} "
        f"gallery versions rewritten, {report['thumbnails']} thumbnails, "
        f"{report['prefect_runs']} Prefect enroll runs"
    )


@app.command()
def serve(
    tokens_file: Path | None = typer.Option(
        None,
        "--tokens-file",
        help="Analyst tokens, one NAME[:ROLE]=TOKEN a line (ROLE analyst or admin); "
        "the file must not be readable by others.",
    ),
    new_token: str | None = typer.Option(
        None,
        "--new-token",
        metavar="NAME[:ROLE]",
        help="Print a fresh random token for NAME (shown once) and exit.",
    ),
    token: list[str] = typer.Option(None, "--token", hidden=True),
    host: str | None = typer.Option(None, help="Address to listen on (default: serve_host)."),
    port: int | None = typer.Option(None, help="Port (default: serve_port)."),
) -> None:
    """The analyst web page and JSON API (token-protected, every request audited)."""
    from biofuse.serve.tokens import hash_entry
    from biofuse.serve.tokens import new_token as make_token

    if token:  # every process on the host can read a command line (`ps`)
        _fail(
            BiofuseError(
                "--token would show the secret to every user of this host (ps); put tokens "
                "in a file (--tokens-file) or in BIOFUSE_API_TOKENS"
            )
        )
    if new_token is not None:
        fresh = make_token()
        try:
            line = f"{new_token.strip()}={fresh}"
            hashed = hash_entry(line)
        except BiofuseError as exc:
            _fail(exc)
            return
        console.print("A new token, shown only this once. For the tokens file (chmod 600):")
        console.print(line, markup=False, highlight=False)
        console.print("or, as its sha256, for api_tokens in biofuse.toml:")
        console.print(hashed, markup=False, highlight=False)
        return

    import uvicorn

    from biofuse.serve.app import create_app

    try:
        settings = load_settings(api_tokens_file=tokens_file)
        host, port = host or settings.serve_host, port or settings.serve_port
        web = create_app(settings, host=host)
    except BiofuseError as exc:
        _fail(exc)
        return
    console.print(f"analyst page on http://{host}:{port}/  (API schema: /openapi.json)")
    uvicorn.run(web, host=host, port=port, log_level="warning")


# -- fusion: calibrate, report, gallery migrate (fusion issue) ----------------------------------
def _model_id_options(pairs: list[str] | None, modalities: list[str]) -> dict[str, str]:
    """MODALITY=MODEL_ID options, else the configured face/voice models' ids."""
    from biofuse.registry import Registry

    ids = dict(p.split("=", 1) for p in pairs or [] if "=" in p)
    settings = load_settings()
    configured = {"face": settings.face_model, "voice": settings.voice_model}
    for m in modalities:
        if m not in ids and m in configured:
            ids[m] = Registry(settings.models_dir).resolve(configured[m]).model_id
    return ids


@app.command()
def calibrate(
    scores: list[Path] = typer.Argument(..., help="Labelled score files (CSV or bob 4-column)."),
    method: str = typer.Option(None, help="sum|mean|max|weighted|quality|logistic|gboost|mlp."),
    target_fpir: float = typer.Option(None, help="Open-set false positive budget (0-1)."),
    model_id: list[str] = typer.Option(
        None, "--model-id", help="MODALITY=MODEL_ID the scores came from (default: configured)."
    ),
) -> None:
    """Fit calibration, fusion and the open-set threshold on your labelled scores."""
    from typing import get_args

    from biofuse.config import Settings
    from biofuse.fusion.operator import calibrate_files
    from biofuse.fusion.report import labelled_tables, read_rows

    settings = load_settings()
    method = method or settings.fusion_method
    methods = get_args(Settings.model_fields["fusion_method"].annotation)
    if method not in methods:
        _fail(BiofuseError(f"unknown fusion method {method!r}: use one of {', '.join(methods)}"))
    try:
        modalities = sorted({r.modality for p in scores for r in read_rows(p)})
        labelled_tables([r for p in scores for r in read_rows(p)])  # fail early on bad labels
        ids = _model_id_options(model_id, modalities)
        path = settings.calibration_path or settings.home / "calibration.json"
        cal = calibrate_files(
            scores,
            ids,
            path,
            settings.learned_fusion_dir or settings.home / "fusion",
            method,
            target_fpir or settings.target_fpir,
            settings.fusion_weights,
        )
    except (BiofuseError, ValueError, OSError) as exc:
        _fail(exc)
        return
    r = cal.report
    console.print(
        f"{method}: threshold {cal.threshold:.4g} for FPIR <= {cal.target_fpir:g} "
        f"(measured {r['fpir_at_threshold']:.4f} on {r['nonmated_probes']} {r['threshold_from']}); "
        f"DIR rank 1 {r['dir_rank1_at_threshold']:.4f} on {r['mated_probes']} mated probes"
    )
    console.print(
        f"written to {path}; identify uses it from now on (fusion_method={method})", markup=False
    )


@app.command()
def report(
    scores: list[Path] = typer.Argument(..., help="Labelled score files (CSV or bob 4-column)."),
    out: Path = typer.Option(Path("score-report"), help="Folder for the plots and summaries."),
    groups: Path = typer.Option(
        None,
        help="'name<TAB>group' per person: adds error rates per group (groups.md/html/json).",
    ),
    threshold: float = typer.Option(
        None, help="Operator's threshold for the per-group open-set view (default: FPIR 1e-2)."
    ),
) -> None:
    """ROC, DET, CMC and score histograms as PNG, plus a markdown and HTML summary."""
    from biofuse.fusion.demographics import read_groups, write_group_report
    from biofuse.fusion.report import labelled_tables, read_rows, write_report

    try:
        table = labelled_tables([r for p in scores for r in read_rows(p)])
        summary = write_report(table, out)
        by_group = write_group_report(table, read_groups(groups), out, threshold) if groups else {}
    except (BiofuseError, ValueError, OSError) as exc:
        _fail(exc)
        return
    for name, result in by_group.items():
        worst = result["ratios"]["0.001"]
        console.print(
            f"{name} per group at FMR 1e-3: FNMR max/min {worst['fnmr'] or float('nan'):.2f}, "
            f"FMR within max/min {worst['fmr_within'] or float('nan'):.2f} "
            f"({out}/groups.md)",
            markup=False,
        )
    for name, s in summary.items():
        console.print(
            f"{escape(str(name))}: EER {s.get('eer', float('nan')):.4f}, "
            f"TAR@FAR=1e-3 {s.get('tar_at_far_0.001', float('nan')):.4f}, "
            f"rank 1 {s.get('rank1', float('nan')):.4f}"
        )
    console.print(f"{out}/report.md, {out}/report.html and PNG plots written", markup=False)


@gallery_app.command("migrate")
def gallery_migrate(
    source: str = typer.Option(..., "--from", help="Model id the gallery was enrolled with."),
    target: str = typer.Option(..., "--to", help="Model id to carry it to."),
    modality: str = typer.Option("face", help="Which modality's gallery."),
    map_file: Path = typer.Option(None, "--map", help="A saved map (.json) instead of fitting."),
    method: str = typer.Option("ridge", help="ridge (affine) or procrustes (rotation)."),
) -> None:
    """Map enrolled templates into a new model's space until they are re-extracted."""
    from biofuse.flows.context import Context
    from biofuse.flows.migrate import load_map, migrate_gallery

    try:
        ctx = Context.open()
        fixed_map = load_map(map_file) if map_file else None
        result = migrate_gallery(ctx, modality, source, target, fixed_map, method)  # type: ignore[arg-type]
    except (BiofuseError, ValueError, OSError) as exc:
        _fail(exc)
        return
    console.print(
        f"{result['migrated']} {modality} enrollments migrated from {source} to {target}",
        markup=False,
    )
    console.print_json(json.dumps(result["map"]))


@app.command()
def explain(
    key: str = typer.Argument(None, help="A track key (see `biofuse status` or the page)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole sealed record."),
    out: Path = typer.Option(None, help="Also write the record to this file."),
    check: Path = typer.Option(
        None, "--verify", help="Check that a saved record's sha256 still matches its content."
    ),
) -> None:
    """Why a track was named (or not): a self-contained, sha256-sealed decision record."""
    from biofuse.catalog import Catalog
    from biofuse.serve.record import decision_record, verify

    if check is not None:
        try:
            record = json.loads(check.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _fail(BiofuseError(f"cannot read the record {check}: {exc}"))
            return
        ok = isinstance(record, dict) and verify(record)
        console.print(f"{check}: " + ("intact" if ok else "ALTERED or not a record"), markup=False)
        raise typer.Exit(0 if ok else 1)
    if key is None:
        _fail(BiofuseError("name a track key, or --verify FILE"))
    try:
        settings = load_settings()
        record = decision_record(Catalog(settings.catalog_url), settings, key)
    except BiofuseError as exc:
        _fail(exc)
        return
    text = json.dumps(record, indent=2, ensure_ascii=False)
    if out is not None:
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(out)
    if as_json:
        print(text)
    else:
        d = record["decision"]
        console.print(f"{key}: {d['decision']}. Why: {d['why']}", markup=False)
        console.print(f"record sha256 {record['sha256']}", markup=False)
