#!/usr/bin/env bash
# Install everything and run the checks: Debian packages for a virtual display
# (Xvfb, GL, the xcb/xkb libraries Qt needs), a virtual environment in .venv with
# napari-dip, napari and the test tools, then ruff and the test suite under Xvfb.
# Works on a fresh Debian/Ubuntu machine, as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    packages=(xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
        libxkbcommon0 libxkbcommon-x11-0 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
        libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xinput0 libx11-xcb1)
    python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned here only, for a quick CPU install; the package itself takes a range.
.venv/bin/python -m pip install -q "torch==2.13.0" -e ".[all,test]"

.venv/bin/ruff check .
.venv/bin/ruff format --check .
xvfb-run -a .venv/bin/python -m pytest "$@"
