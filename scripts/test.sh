#!/usr/bin/env bash
# Install everything and run the checks: Debian packages for a virtual display
# (scripts/system-deps.sh), a virtual environment in .venv with napari-dip,
# napari and the test tools, then ruff, the manifest check and the test suite
# under Xvfb. Works on a fresh Debian/Ubuntu machine, as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned here only, for a quick CPU install; the package itself takes a range.
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[all,test,batch]"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/npe2 validate napari-dip
xvfb-run -a .venv/bin/python -m pytest "$@"
