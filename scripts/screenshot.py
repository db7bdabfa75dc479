"""Screenshot of the docked widget with a finished result, for the README.

Run under a virtual display: xvfb-run -a python scripts/screenshot.py [OUT.png]
Opens the demo (noisy sample), runs a short CPU fit, shows input and result side
by side (napari grid mode) and saves the whole window.
"""

import sys
import time
from pathlib import Path

from qtpy.QtWidgets import QApplication

from napari_dip._cli import open_demo

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "widget.png")


def main() -> None:
    viewer, widget = open_demo("noisy")
    viewer.window.resize(1600, 900)
    widget.device.value, widget.width.value = "cpu", 48  # denoising stops by itself
    widget.run()
    deadline = time.time() + 600
    while widget.running and time.time() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    viewer.canvas.grid.enabled = True
    viewer.reset_view()
    for _ in range(20):
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(str(OUT), canvas_only=False)
    print(f"wrote {OUT}: {[layer.name for layer in viewer.layers]}; {widget.status.value}")
    viewer.close()


if __name__ == "__main__":
    main()
