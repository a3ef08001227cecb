"""What every flow opens: settings, catalog, store and model handles."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from biofuse.catalog import Catalog
from biofuse.config import Settings, load_settings
from biofuse.registry import Registry
from biofuse.store import EmbeddingStore
from flows.actors import ModelHandle, ensure_ray, local_handle, start_actors


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
        if kind not in self.handles:
            if use_ray:
                ensure_ray(self.settings)
                self.actors[kind], self.handles[kind] = start_actors(kind, self.settings)
            else:
                self.handles[kind] = local_handle(kind, self.settings)
        return self.handles[kind]

    def model_id(self, kind: str) -> str:
        """The configured model's id (name + weights sha256) without loading it."""
        if kind in self.handles:
            return self.handles[kind].model_id
        name = self.settings.face_model if kind == "face" else self.settings.voice_model
        return Registry(self.settings.models_dir).resolve(name).model_id
