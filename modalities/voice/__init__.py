"""Voice modality: speech turns (VAD) and speaker embeddings of those turns.

The extractor is imported lazily by its module, so
`from biofuse.modalities.voice import detect_speech` stays light (no torch, no librosa).
"""

from biofuse.modalities.voice.resemblyzer_voice import (
    AudioSegment,
    ResemblyzerExtractor,
    segment_quality,
    turn_segments,
    voice_template,
)
from biofuse.modalities.voice.vad import SpeechTurn, detect_speech, noise_power, snr_db

__all__ = [
    "AudioSegment",
    "ResemblyzerExtractor",
    "SpeechTurn",
    "detect_speech",
    "noise_power",
    "segment_quality",
    "snr_db",
    "turn_segments",
    "voice_template",
]
