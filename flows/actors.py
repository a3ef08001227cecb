"""Ray actors: each holds one loaded model and batches the items of concurrent callers.

Videos processed in parallel each send a few frames (or speech segments) at a
time; the actor gathers whatever arrives within `batch_wait_ms`, up to
`batch_size` items, into one model call, so batches fill across videos.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from biofuse.flows.models import MODEL_KINDS, build_model, configured_spec
from biofuse.modalities.base import Embeddings

from biofuse.config import Settings
from biofuse.errors import BiofuseError
from biofuse.registry import INPUTS as MODEL_MODALITIES
from biofuse.registry import Registry

ACTOR_START_TIMEOUT_S = 300


@dataclass
class ModelHandle:
    """What the pipeline sees of a model: its id and a blocking call over a batch."""

    kind: str
    model_id: str
    call: Callable[[Sequence[Any]], Any]

    def __call__(self, items: Sequence[Any]) -> Any:
        return self.call(items)


def local_handle(kind: str, settings: Settings) -> ModelHandle:
    """The model in this process: for tests, benchmarks and one-off enrollment."""
    model = build_model(kind, settings)
    return ModelHandle(kind, model.model_id, getattr(model, MODEL_KINDS[kind][1]))


def _split(result: Any, chunks: list[list[Any]]) -> list[Any]:
    """Cut one batch result back into the callers' shares.

    A list result has one entry per item, in order. An Embeddings result may have
    dropped items (too-short speech gives no row), so its rows go back by key.
    """
    if isinstance(result, Embeddings):
        owners = [{item.key for item in chunk} for chunk in chunks]
        return [
            result.take([i for i, key in enumerate(result.keys) if key in mine]) for mine in owners
        ]
    parts, start = [], 0
    for chunk in chunks:
        parts.append(result[start : start + len(chunk)])
        start += len(chunk)
    return parts


@ray.remote
class BatchingModelActor:
    """One loaded model; `run(items)` calls from many tasks are merged into batches."""

    def __init__(self, kind: str, settings_json: str, device: str) -> None:
        settings = Settings.model_validate_json(settings_json)
        self.kind = kind
        self.model = build_model(kind, settings, device)
        self.method = getattr(self.model, MODEL_KINDS[kind][1])
        self.batch_size = settings.batch_size
        self.wait_s = settings.batch_wait_ms / 1000.0
        self.queue: asyncio.Queue | None = None
        self.batches = 0
        self.items = 0

    def info(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model_id": self.model.model_id,
            "pid": os.getpid(),
            "batches": self.batches,
            "items": self.items,
        }

    async def run(self, items: list[Any]) -> Any:
        if self.queue is None:
            self.queue = asyncio.Queue()
            asyncio.get_running_loop().create_task(self._serve())
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((items, future))
        return await future

    async def _serve(self) -> None:
        assert self.queue is not None
        while True:
            pending = [await self.queue.get()]
            size = len(pending[0][0])
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while size < self.batch_size:
                timeout = deadline - asyncio.get_running_loop().time()
                if timeout <= 0:
                    break
                try:
                    pending.append(await asyncio.wait_for(self.queue.get(), timeout))
                except TimeoutError:
                    break
                size += len(pending[-1][0])
            items = [item for chunk, _ in pending for item in chunk]
            try:
                result = await asyncio.to_thread(self.method, items)
            except Exception as exc:  # the callers' tasks decide whether to retry
                for _, future in pending:
                    future.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(items)
            for (_, future), part in zip(pending, _split(result, [c for c, _ in pending])):
                future.set_result(part)


# Per model kind: the settings of its detector or pipeline stage that change its outputs.
# The model's own such settings are in its declaration (`ModelSpec.output_settings`), and the
# setting naming a kind's model is `{kind}_model` for every kind the registry has models of.
# Actors are shared by name, so two configurations that differ in any of these get their own.
KIND_SETTINGS: dict[str, tuple[str, ...]] = {
    "face": ("face_detector", "face_min_px", "face_upsample"),
    "voice": (),
    "gait": (),
    "body": (),
    "person": ("person_min_height_px",),  # OpenCV's HOG: ships inside OpenCV
}


def actor_name(kind: str, settings: Settings) -> str:
    """Callers with the same model settings share one actor; other settings get their own."""
    output_fields: tuple[str, ...] = KIND_SETTINGS[kind]
    if kind not in MODEL_MODALITIES:
        import cv2

        model, model_id = "opencv-hog", f"opencv-{cv2.__version__}"
    else:
        spec = configured_spec(kind, settings)
        model = spec.name
        model_id = Registry(settings.models_dir).resolve(model).model_id  # same weights, same actor
        output_fields += spec.output_settings
    relevant = (
        kind,
        model_id,
        *(getattr(settings, f) for f in output_fields),
        settings.batch_size,
        settings.batch_wait_ms,
        settings.num_gpus,
    )
    return f"biofuse-{kind}-{model}-{hashlib.sha1(repr(relevant).encode()).hexdigest()[:8]}"


def actor_count(kind: str, settings: Settings) -> int:
    """Face is most of the model time on CPU, so it gets replicas; the others one each."""
    return {"face": settings.face_actors, "voice": settings.voice_actors}.get(kind, 1)


def start_actors(kind: str, settings: Settings) -> tuple[list[Any], ModelHandle]:
    """Start (or join) the named actors for `kind` and return one handle over all of them.

    Calls go to the actors in turn; each actor still merges the calls it receives
    into batches, so more actors trade batch fill for parallel model work.
    """
    device = "cuda" if settings.num_gpus > 0 else "cpu"
    name = actor_name(kind, settings)
    actors = [
        BatchingModelActor.options(
            name=f"{name}-{i}",
            get_if_exists=True,
            num_cpus=settings.num_cpus_per_actor,
            num_gpus=settings.num_gpus,
            max_restarts=2,
            max_task_retries=2,
            max_concurrency=64,
        ).remote(kind, settings.model_dump_json(), device)
        for i in range(actor_count(kind, settings))
    ]
    try:
        infos = ray.get([a.info.remote() for a in actors], timeout=ACTOR_START_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError as exc:
        raise BiofuseError(
            f"the {kind} model actors did not start within {ACTOR_START_TIMEOUT_S} s: the Ray "
            f"cluster may lack {settings.num_cpus_per_actor} free CPU / {settings.num_gpus} GPU "
            "per actor (see `ray status`; lower num_cpus_per_actor or add workers)"
        ) from exc
    turn = itertools.count()

    def call(items: Sequence[Any]) -> Any:
        actor = actors[next(turn) % len(actors)]  # itertools.count is atomic under the GIL
        return ray.get(actor.run.remote(list(items)))

    return actors, ModelHandle(kind, infos[0]["model_id"], call)


def ensure_ray(settings: Settings) -> None:
    """Local Ray by default; BIOFUSE_RAY_ADDRESS (settings.ray_address) joins a cluster."""
    if ray.is_initialized():
        return
    if settings.ray_address:
        ray.init(address=settings.ray_address, ignore_reinit_error=True, log_to_driver=False)
    else:
        # Logical CPUs: at least what every model kind's actors ask for, or the last actors of
        # a face+voice+gait+body run would wait forever on a 2-core machine. The models are
        # mostly single-threaded, so a small oversubscription costs little.
        demand = sum(actor_count(k, settings) for k in KIND_SETTINGS) * settings.num_cpus_per_actor
        ray.init(
            # "local": a private Ray. Without it ray.init() joins any Ray it finds running on
            # the machine (another operator's `biofuse process`), and dies with that one.
            address="local",
            num_cpus=max(2, os.cpu_count() or 2, math.ceil(demand)),
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
        )
