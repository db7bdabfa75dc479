"""napari-dip: Deep Image Prior restoration for numpy and napari.

``denoise``, ``inpaint``, ``super_resolve`` and ``flash_no_flash`` restore one
image with no training data. torch is imported on first use, not here.
"""

from importlib.metadata import PackageNotFoundError, version

from ._api import denoise, flash_no_flash, inpaint, super_resolve

try:
    __version__ = version("napari-dip")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__", "denoise", "flash_no_flash", "inpaint", "super_resolve"]
