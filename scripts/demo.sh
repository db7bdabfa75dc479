#!/usr/bin/env bash
# Install napari-dip into .venv and run the headless example: denoise a bundled
# noisy photograph on this machine (GPU if there is one) and write
# napari-dip-example.png (noisy | restored | clean). No display needed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e .
.venv/bin/napari-dip example --output napari-dip-example.png "$@"
