"""Screenshots of the docked widget, for the README.

Run under a virtual display: xvfb-run -a python scripts/screenshot.py [--stack] [OUT.png]

Default: opens the demo (noisy sample), runs a short CPU fit, shows input and result
side by side (napari grid mode) and saves the whole window. ``--stack``: the noisy
16-bit fluorescence Z-stack restored every plane in turn, captured while plane 4 is
fitted (status line, preview at its plane, loss curve), then stopped: the result
keeps the finished planes.
"""

import sys
import time
from pathlib import Path

from qtpy.QtWidgets import QApplication

from napari_dip._cli import open_demo

DOCS = Path(__file__).resolve().parents[1] / "docs"


def wait(condition, seconds: float) -> None:
    deadline = time.time() + seconds
    while not condition() and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)


def capture(viewer, widget, out: Path) -> None:
    """Input and result side by side (grid mode), the whole window saved."""
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(out), canvas_only=False)
    print(f"wrote {out}: {[layer.name for layer in viewer.layers]}; {widget.status.value}")


def photo(out: Path) -> None:
    viewer, widget = open_demo("noisy")
    viewer.window.resize(1600, 900)
    widget.device.value, widget.width.value = "cpu", 48  # denoising stops by itself
    widget.run()
    wait(lambda: not widget.running, 600)
    capture(viewer, widget, out)
    viewer.close()


def stack(out: Path) -> None:
    viewer, widget = open_demo("fluorescence-stack")
    viewer.window.resize(1600, 900)
    widget.device.value, widget.width.value = "cpu", 32
    widget.run()
    names = lambda: " ".join(layer.name for layer in viewer.layers)  # noqa: E731
    wait(lambda: "plane 4 of" in widget.status.value and "(preview)" in names(), 900)
    viewer.dims.set_current_step(0, 3)  # look at the plane being fitted
    capture(viewer, widget, out)
    widget.stop()
    wait(lambda: not widget.running, 120)
    print(f"after Stop: {[layer.name for layer in viewer.layers]}; {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--stack"]
    if "--stack" in sys.argv:
        stack(Path(args[0]) if args else DOCS / "widget_stack.png")
    else:
        photo(Path(args[0]) if args else DOCS / "widget.png")
