"""napari-dip: Deep Image Prior restoration for numpy and napari.

``denoise``, ``inpaint``, ``super_resolve`` and ``flash_no_flash`` restore one
image with no training data. Nothing heavy is imported here (the command line
starts in milliseconds); numpy loads on first use of a function, torch when a
fit starts.
"""

TYPE_CHECKING = False  # not typing's: importing typing delays the command line's start
if TYPE_CHECKING:
    from typing import Any

    from ._api import denoise, estimate_noise, flash_no_flash, inpaint, super_resolve
    from ._batch import batch

    __version__: str

__all__ = ["__version__", "batch", "denoise", "estimate_noise", "flash_no_flash", "inpaint", "super_resolve"]


def __getattr__(name: str) -> "Any":
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("napari-dip")
        except PackageNotFoundError:  # a source tree that is not installed
            return "0+unknown"
    if name == "batch":
        from ._batch import batch

        return batch
    if name in __all__:
        from . import _api

        return getattr(_api, name)
    raise AttributeError(f"module 'napari_dip' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
