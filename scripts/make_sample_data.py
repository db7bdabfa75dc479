"""Write the small sample images that ship in src/napari_dip/data/.

Crops of scikit-image's bundled images (public domain / CC0, see
skimage/data/README.txt), stored so the package needs no download and no
scikit-image at run time. Run from the repository root.
"""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_dip" / "data"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ihc = data.immunohistochemistry()[150:406, 150:406].astype(np.float64)  # stained tissue, RGB 256x256
    crops = {
        "astronaut.png": data.astronaut()[20:148, 170:298],  # face and helmet, RGB 128x128
        "chelsea.png": data.chelsea()[40:168, 130:258],  # cat's face, RGB 128x128
        "coffee.png": data.coffee()[100:228, 200:328],  # cup and saucer, RGB 128x128
        # 4x4 box average: a 64x64 low-resolution microscopy image to upsample.
        "ihc_lowres.png": ihc.reshape(64, 4, 64, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8),
    }
    for name, image in crops.items():
        iio.imwrite(OUT / name, image)
        print(OUT / name, image.shape, image.dtype)


if __name__ == "__main__":
    main()
