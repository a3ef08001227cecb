"""Shared fixtures: the real evaluation data beside the repository and generated bad inputs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from biofuse.config import shared_data_dir

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Prefect keeps its local API database under PREFECT_HOME: one throw-away home per test session,
# set before anything imports prefect.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="biofuse-prefect-"))
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # busy CI hosts


def parity_fixture(name: str, marker: str) -> Path:
    """A folder of ../shared/fixtures (or $BIOFUSE_SHARED_FIXTURES); skips the test if absent."""
    default = REPO_ROOT.parent / "shared" / "fixtures"
    folder = Path(os.environ.get("BIOFUSE_SHARED_FIXTURES", default)) / name
    if not (folder / marker).is_file():
        pytest.skip(f"parity fixture {name} not found at {folder}")
    return folder


def seeded_tensor(shape: list[int], branch: str, seed: int) -> torch.Tensor | None:
    """The parity fixtures' weight rule for one tensor (both READMEs give the same rule).

    None for `skip` (left as the model constructed it).
    """
    import math

    import torch

    g = torch.Generator().manual_seed(seed)
    if branch == "skip":
        return None
    if branch == "running_var":
        return 0.5 + torch.rand(shape, generator=g)
    if branch == "mean_or_bias":
        return 0.1 * torch.randn(shape, generator=g)
    if branch == "norm_weight":
        return 1.0 + 0.1 * torch.randn(shape, generator=g)
    if branch == "fanin_weight":
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else shape[0]
        return torch.randn(shape, generator=g) * (1.0 / math.sqrt(fan_in))
    raise AssertionError(f"unknown branch {branch!r}")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        pytest.skip(f"shared evaluation data not found at {root}")
    return root


def write_audio_only_mp4(path: Path, seconds: float = 2.0) -> None:
    """An .mp4 with an AAC track and no picture (a microphone-only recorder)."""
    import av
    import numpy as np

    rate = 16000
    t = np.arange(int(seconds * rate)) / rate
    tone = (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("aac", rate=rate)
        stream.layout = "mono"
        for start in range(0, len(tone), 1024):
            frame = av.AudioFrame.from_ndarray(
                tone[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_bad_corpus(folder: Path, good_video: Path) -> dict[str, str]:
    """The inputs an archive really contains besides good video; returns name -> expected status."""
    import numpy as np

    from biofuse.sample_archive import write_video

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "zero_bytes.mp4").write_bytes(b"")
    whole = good_video.read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (folder / "notes_renamed.mp4").write_text("this is a text file, not a video\n" * 50)
    write_audio_only_mp4(folder / "audio_only.mp4")
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (360, 640, 3), dtype=np.uint8) for _ in range(20)]
    write_video(folder / "video_only.mp4", frames, None)
    return {
        "zero_bytes.mp4": "failed",
        "truncated.mp4": "failed",
        "notes_renamed.mp4": "failed",
        "audio_only.mp4": "failed",
        "video_only.mp4": "done",  # silent CCTV is valid: processed, noted that voice was skipped
    }


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Drop speechbrain's not-yet-loaded lazy modules from sys.modules before hypothesis's
    collection hook reads every module's `__file__`: on those, attribute access imports an
    optional dependency (transformers) we do not install and raises ImportError, which
    would abort the whole session. Code that needs them imports them afresh."""
    drop_unloaded_lazy_modules()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """The same after every test: a test that imports speechbrain at run time (the registry
    contract's seeded ECAPA release) leaves new lazy modules that a later hypothesis test
    would read."""
    drop_unloaded_lazy_modules()


def drop_unloaded_lazy_modules() -> None:
    import sys

    for name, module in list(sys.modules.items()):
        lazy = any(c.__name__ == "LazyModule" for c in type(module).__mro__)
        if lazy and getattr_static_loaded(module) is None:
            del sys.modules[name]


def getattr_static_loaded(module: object) -> object:
    """A speechbrain LazyModule's loaded target, read without triggering the import."""
    import inspect

    try:
        return inspect.getattr_static(module, "lazy_module")
    except AttributeError:
        return None


@pytest.fixture(autouse=True)
def _environment_restored() -> Iterator[None]:
    """The CLI exports --home and --config as BIOFUSE_* variables for the services it starts;
    a CliRunner test runs it in this process, so each test gets the environment back after."""
    saved = dict(os.environ)
    yield
    for name in set(os.environ) - set(saved):
        del os.environ[name]
    os.environ.update({k: v for k, v in saved.items() if os.environ.get(k) != v})
