"""What every flow opens: settings, catalog, store and model handles."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biofuse.flows.actors import KIND_SETTINGS, ModelHandle, ensure_ray, local_handle, start_actors
from biofuse.flows.models import configured_spec
from biofuse.flows.pipeline import VideoEvidence, analyze_video, pipeline_kinds

from biofuse.catalog import Catalog
from biofuse.config import Settings, load_settings
from biofuse.errors import ConfigError, ModelMissingError
from biofuse.registry import INPUTS as MODEL_MODALITIES
from biofuse.registry import Registry
from biofuse.store import EmbeddingStore

_STARTING = threading.Lock()  # videos analysed in parallel threads start each model kind once


@dataclass
class Context:
    settings: Settings
    catalog: Catalog
    store: EmbeddingStore
    handles: dict[str, ModelHandle] = field(default_factory=dict)
    actors: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def open(cls, config_path: str | None = None, **overrides: Any) -> Context:
        settings = load_settings(Path(config_path) if config_path else None, **overrides)
        return cls(settings, Catalog(settings.catalog_url), EmbeddingStore(settings.store_url))

    def model(self, kind: str, use_ray: bool = True) -> ModelHandle:
        """The model for `kind` in a Ray actor (default) or in this process."""
        with _STARTING:
            if kind not in self.handles:
                if use_ray:
                    ensure_ray(self.settings)
                    self.actors[kind], self.handles[kind] = start_actors(kind, self.settings)
                else:
                    self.handles[kind] = local_handle(kind, self.settings)
            return self.handles[kind]

    def deferred(self, kind: str) -> ModelHandle:
        """The model for `kind`, its actors (and Ray) started by the first call: a kind the
        videos give no work (no audio: no voice; nobody seen: no gait, no body) costs nothing."""
        if kind in self.handles or kind not in MODEL_MODALITIES:  # person: id once loaded
            return self.model(kind)
        return ModelHandle(kind, self.model_id(kind), lambda items: self.model(kind)(items))

    def analyze(self, path: Path, content_hash: str) -> VideoEvidence:
        """All evidence of one video, every configured model running in its actors, each
        started when the pipeline first has work for it."""
        handles = {kind: self.deferred(kind) for kind in pipeline_kinds(self.settings)}
        return analyze_video(path, content_hash, self.settings, handles)

    def model_stats(self) -> dict[str, dict[str, int]]:
        """Per model kind run in Ray actors: items and batches so far, summed over replicas.

        Recorded with each run so an operator can see how well batches filled.
        """
        import ray

        stats = {}
        for kind, actors in self.actors.items():
            infos = ray.get([a.info.remote() for a in actors])
            stats[kind] = {
                "actors": len(infos),
                "items": sum(i["items"] for i in infos),
                "batches": sum(i["batches"] for i in infos),
                "busy_actors": sum(i["items"] > 0 for i in infos),
            }
        return stats

    def model_id(self, kind: str) -> str:
        """The configured model's id (name + weights sha256) without loading it."""
        if kind in self.handles:
            return self.handles[kind].model_id
        if kind not in KIND_SETTINGS:
            raise ConfigError(
                f"unknown model kind {kind!r}: use one of {', '.join(sorted(KIND_SETTINGS))}"
            )
        if kind not in MODEL_MODALITIES:  # the person detector is no registry file
            raise ModelMissingError(
                f"the {kind!r} model has no registry entry, so its id is known only once it is "
                f"loaded: call ctx.model({kind!r}) first"
            )
        name = configured_spec(kind, self.settings).name
        return Registry(self.settings.models_dir).resolve(name).model_id
