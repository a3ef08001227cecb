"""Long recordings in bounded memory (issue 16, item 5).

A recording is decoded once, a block at a time (`biofuse.media.iter_audio`): each block goes
to the streaming VAD (`vad.StreamingVAD`: flags and frame powers, a few MB for hours) and to
a temporary file, unlinked at once, from which the spans to embed (diarization windows,
speech turns) are read back a batch at a time. What stays in memory is the flags, the frame
powers, one batch of spans and the rows: not the ~230 MB per hour of samples.
"""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from biofuse.modalities.base import Embeddings

EMBED_BATCH = 16  # spans per encoder call: at most 16 x 10 s of audio and their activations


class SpilledAudio:
    """Mono float32 samples in an anonymous temporary file; `audio[a:b]` reads that span."""

    def __init__(self, folder: Path | None = None) -> None:
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        # no name: gone when closed, or when the process dies
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 (closed by close())
        self._lock = threading.Lock()
        self.n = 0

    def append(self, block: np.ndarray) -> None:
        with self._lock:
            self._file.seek(0, 2)
            self._file.write(np.ascontiguousarray(block, dtype=np.float32).tobytes())
            self.n += len(block)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, span: slice) -> np.ndarray:
        if not isinstance(span, slice) or span.step not in (None, 1):
            raise TypeError("spilled audio is read by contiguous spans: audio[a:b]")
        a, b, _ = span.indices(self.n)
        if b <= a:
            return np.zeros(0, np.float32)
        with self._lock:
            self._file.seek(4 * a)
            return np.frombuffer(self._file.read(4 * (b - a)), np.float32).copy()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SpilledAudio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def embed_in_batches(
    embed: Callable[[Sequence[Any]], Embeddings],
    segments: Callable[[int, int], Sequence[Any]],
    count: int,
    batch: int = EMBED_BATCH,
) -> Embeddings:
    """`embed` over items [0, count), made `batch` at a time by `segments(start, stop)`, so
    only one batch of audio is held; the rows in item order."""
    parts = [embed(segments(a, min(a + batch, count))) for a in range(0, count, batch)]
    parts = [p for p in parts if len(p)] or [embed([])]
    return parts[0] if len(parts) == 1 else Embeddings.concat(parts)
