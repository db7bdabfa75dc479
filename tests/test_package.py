"""Packaging: the npe2 manifest is found, and importing stays light."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_npe2_finds_the_manifest_in_the_installed_package():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution("napari-dip")
    assert manifest.name == "napari-dip"
    assert manifest.display_name == "Deep Image Prior"


def test_top_level_manifest_is_the_packaged_one():
    assert (ROOT / "napari.yaml").read_text() == (ROOT / "src" / "napari_dip" / "napari.yaml").read_text()


def test_import_does_not_load_torch_or_napari():
    code = "import sys, napari_dip; print(sorted(m for m in ('torch', 'napari', 'qtpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api():
    import napari_dip

    assert callable(napari_dip.denoise) and callable(napari_dip.inpaint)
    assert callable(napari_dip.super_resolve) and callable(napari_dip.flash_no_flash)
    assert napari_dip.__version__ != "0+unknown"
    assert "channel_axis : int or None" in napari_dip.denoise.__doc__


def test_npe2_validate_passes():
    import shutil

    exe = shutil.which("npe2") or str(Path(sys.executable).parent / "npe2")
    out = subprocess.run([exe, "validate", "napari-dip"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout
