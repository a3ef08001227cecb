"""One exception hierarchy: every user-facing failure says what was wrong and what to do."""

from __future__ import annotations

from pathlib import Path


def without_path(path: str | Path, message: str) -> str:
    """An error's reason without the path it starts with, where a report already names the file."""
    return message.removeprefix(f"{path}: ")


class BiofuseError(Exception):
    """Base of every error biofuse raises on purpose."""


class ConfigError(BiofuseError):
    """The configuration file or a BIOFUSE_* variable is invalid."""


class MediaError(BiofuseError):
    """A media file cannot be decoded (empty, truncated, not media, missing stream)."""


class ModelMissingError(BiofuseError):
    """A model's weight files are absent or do not match their recorded sha256."""


class StoreError(BiofuseError):
    """The embedding store is unreadable, read-only or inconsistent."""


class CatalogError(BiofuseError):
    """The catalog database refused an operation."""


class GalleryError(BiofuseError):
    """Identification was asked for but the gallery cannot answer (empty, wrong model)."""
