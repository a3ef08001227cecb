#!/usr/bin/env bash
# Create .venv and install biofuse with its pinned dependencies (idempotent, offline-safe reruns).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON=$candidate; break
    fi
  done
fi
if [ -z "$PYTHON" ]; then
  echo "biofuse needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

stamp=.venv/.biofuse-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0  # already installed from this exact dependency set
fi

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
echo "installing biofuse and its dependencies into .venv (first time: a few minutes, ~5 GB)"
.venv/bin/python -m pip install --quiet --upgrade pip 'setuptools<81' wheel
.venv/bin/python -m pip install --quiet -e '.[dev]'
# The last MediaPipe that bundles its models; see pyproject.toml for why --no-deps.
.venv/bin/python -m pip install --quiet --no-deps mediapipe==0.10.21
# MTCNN, the default face detector (its P/R/O-Net weights ship in the wheel). facenet-pytorch
# 2.6.0 declares torch<2.3, torchvision<0.18, numpy<2 and Pillow<10.3, so it goes in without
# its dependencies; it runs on torch 2.11 + torchvision 0.26 (pyproject.toml), tested by
# tests/test_face_mtcnn.py.
.venv/bin/python -m pip install --quiet --no-deps facenet-pytorch==2.6.0
echo "$want" > "$stamp"
