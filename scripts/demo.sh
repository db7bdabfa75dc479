#!/usr/bin/env bash
# Install napari-dip with napari into .venv and open the demo: napari with a noisy
# sample loaded and the Deep Image Prior widget docked (press Run). Without a
# display, run the headless example instead: denoise the bundled noisy photograph
# and write napari-dip-example.png (noisy | restored | clean).
# Extra arguments go to the demo, e.g. --sample damaged|low-resolution|flash.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A quick CPU build where none is installed yet; install a CUDA build of torch yourself for a GPU.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all]"
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ] || [ "$(uname)" = Darwin ]; then
    .venv/bin/napari-dip demo "$@"
else
    echo "no display: running the headless example instead of the napari demo"
    .venv/bin/napari-dip example --output napari-dip-example.png --overwrite  # our own file: rerunning replaces it
fi
