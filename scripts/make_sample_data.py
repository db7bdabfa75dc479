"""Write the small sample images that ship in src/napari_dip/data/.

Crops of scikit-image's bundled images (public domain / CC0, see
skimage/data/README.txt), stored so the package needs no download and no
scikit-image at run time. Run from the repository root.
"""

from pathlib import Path

import imageio.v3 as iio
from skimage import data

OUT = Path(__file__).resolve().parents[1] / "src" / "napari_dip" / "data"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    crops = {
        "astronaut.png": data.astronaut()[20:148, 170:298],  # face and helmet, RGB 128x128
    }
    for name, image in crops.items():
        iio.imwrite(OUT / name, image)
        print(OUT / name, image.shape, image.dtype)


if __name__ == "__main__":
    main()
