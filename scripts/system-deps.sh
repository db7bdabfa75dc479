#!/usr/bin/env bash
# Debian/Ubuntu packages for napari on this machine or under a virtual display:
# Xvfb, GL (Mesa), and the xcb/xkb libraries Qt needs. Needs root or sudo; does
# nothing where apt-get is missing (install the equivalents yourself there).
set -euo pipefail
command -v apt-get >/dev/null 2>&1 || exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
packages=(xvfb xauth libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libglib2.0-0 libfontconfig1 libdbus-1-3
    libxkbcommon0 libxkbcommon-x11-0 libxcb1 libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xinput0 libx11-xcb1)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
