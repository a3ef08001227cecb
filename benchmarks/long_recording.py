"""Peak memory of the voice path on a 3-hour recording (issue 16, item 5).

The recording is generated under /tmp (never in the repository): the LibriSpeech
utterances of the shared voice-dev set, in turn, each followed by a pause drawn from
--pause-s (low-level noise throughout, so the VAD has a noise floor), until --hours.
It is written as 16 kHz int16 WAV a block at a time (345 MB for 3 hours).

Each path runs in a fresh process and reports its peak RSS (ru_maxrss):
  * streamed - biofuse.flows.pipeline._speech_segments as `process` runs it now (decode, VAD,
    diarization and embedding a block / a batch at a time), resemblyzer in-process;
  * whole-file decode - media.read_audio alone, the first step of the old path: its floor
    (the old path then also held every window's and turn's segment for one encoder call).

    nice -n 10 .venv/bin/python benchmarks/long_recording.py [--hours 3] [--vad webrtc]
Writes benchmarks/results/long_recording.{json,md}.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SR = 16000

STREAMED = """
import json, resource, sys, time
from pathlib import Path
from biofuse.config import load_settings
from biofuse.flows.actors import local_handle
from biofuse.flows.pipeline import VideoEvidence, _speech_segments
settings = load_settings(home=sys.argv[2], vad=sys.argv[3])
voice = local_handle("voice", settings)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
ev = VideoEvidence()
_speech_segments(Path(sys.argv[1]), "long", settings, voice, ev)
print(json.dumps({
    "seconds": round(time.perf_counter() - t, 1),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_before_mb": base / 1024,
    "rows": len(ev.voice) if ev.voice is not None else 0,
    "speakers": len({s.key.split("@")[0] for s in ev.segments}),
    "speech_s": round(sum(s.end_s - s.start_s for s in ev.segments), 1),
    "notes": ev.notes,
}))
"""

WHOLE = """
import json, resource, sys, time
from pathlib import Path
from biofuse import media
t = time.perf_counter()
samples = media.read_audio(Path(sys.argv[1]))
print(json.dumps({
    "seconds": round(time.perf_counter() - t, 1),
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "samples_mb": samples.nbytes / 1e6,
}))
"""


def generate(path: Path, hours: float, pause_s: tuple[float, float], seed: int = 0) -> dict:
    import soundfile

    from biofuse.config import shared_data_dir

    root = shared_data_dir() / "voice-dev" / "librispeech"
    with open(root / "utterances.tsv", newline="") as f:
        utterances = [root / r["path"] for r in csv.DictReader(f, delimiter="\t")]
    clips = [soundfile.read(p, dtype="float32")[0] for p in utterances]
    rng = np.random.default_rng(seed)
    total = int(hours * 3600 * SR)
    written, speech = 0, 0
    with soundfile.SoundFile(path, "w", SR, 1, "PCM_16") as out:
        i = 0
        while written < total:
            clip = clips[i % len(clips)]
            pause = np.zeros(int(rng.uniform(*pause_s) * SR), np.float32)
            block = np.concatenate([clip, pause])[: total - written]
            block = block + 0.002 * rng.standard_normal(len(block)).astype(np.float32)
            out.write(block)
            written += len(block)
            speech += min(len(clip), len(block))
            i += 1
    return {"hours": hours, "speech_fraction": round(speech / written, 3), "utterances": i}


def run(code: str, *args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=3.0)
    parser.add_argument("--pause-s", default="20,60", help="pause after each utterance: lo,hi")
    parser.add_argument("--vad", default="webrtc", choices=["webrtc", "energy", "silero"])
    parser.add_argument("--file", type=Path, default=Path("/tmp/biofuse-long-recording.wav"))
    args = parser.parse_args()
    pause = tuple(float(v) for v in args.pause_s.split(","))
    started = time.perf_counter()
    made = generate(args.file, args.hours, pause)  # type: ignore[arg-type]
    made["file_mb"] = round(args.file.stat().st_size / 1e6, 1)
    home = Path("/tmp/biofuse-long-recording-home")
    result = {
        "recording": made,
        "vad": args.vad,
        "streamed": run(STREAMED, str(args.file), str(home), args.vad),
        "whole_file_decode": run(WHOLE, str(args.file)),
        "total_s": round(time.perf_counter() - started, 1),
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "command": "nice -n 10 .venv/bin/python benchmarks/long_recording.py "
        f"--hours {args.hours} --vad {args.vad}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "long_recording.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "long_recording.md").write_text(render(result))
    print(render(result))


def render(r: dict) -> str:
    s, w, rec = r["streamed"], r["whole_file_decode"], r["recording"]
    return "\n".join(
        [
            f"# Voice path on a {rec['hours']}-hour recording: peak memory",
            "",
            f"Command: `{r['command']}` ({r['total_s']} s, load average "
            f"{r['load_average_at_end']}). Recording: generated 16 kHz WAV of {rec['file_mb']} "
            f"MB, LibriSpeech utterances with pauses, speech fraction {rec['speech_fraction']}; "
            f"VAD {r['vad']}, diarization on, resemblyzer in the same process.",
            "",
            "| path | peak RSS MB | seconds | |",
            "|---|---|---|---|",
            f"| streamed (now) | {s['peak_rss_mb']:.0f} (process before: "
            f"{s['rss_before_mb']:.0f}) | {s['seconds']} | {s['rows']} rows, {s['speakers']} "
            f"speakers, {s['speech_s']} s of turns |",
            f"| whole-file decode alone (old path's first step) | {w['peak_rss_mb']:.0f} | "
            f"{w['seconds']} | samples {w['samples_mb']:.0f} MB |",
            "",
            "Goal: peak RSS <= 1 GB for the streamed path.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
