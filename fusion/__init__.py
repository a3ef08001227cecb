"""Scores to decisions: normalisation, calibration, fusion and evaluation (pure numpy)."""
