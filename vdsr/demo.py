"""The built-in demo set: real photographs that ship inside the scikit-image wheel.

They make the default commands work on a fresh machine with no data downloaded. The files are
read in place from ``skimage/data`` (nothing is copied or fetched).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_PHOTOS", "DEMO_TRAIN", "DEMO_VAL", "demo_folder", "demo_files"]

#: Natural photographs (not drawings, charts or scans) in ``skimage/data``, with their sizes.
DEMO_PHOTOS = (
    "astronaut.png",  # 512 x 512 RGB
    "camera.png",  # 512 x 512 grey
    "chelsea.png",  # 451 x 300 RGB
    "coffee.png",  # 600 x 400 RGB
    "motorcycle_left.png",  # 740 x 500 RGB
    "rocket.jpg",  # 640 x 427 RGB
)


#: The demo training recipe: train on these photos ...
DEMO_TRAIN = (
    "astronaut.png",
    "camera.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
    "retina.jpg",
    "ihc.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "moon.png",
)
#: ... and validate on these, held back.
DEMO_VAL = ("chelsea.png", "coffee.png")


def demo_folder() -> Path:
    """The folder of scikit-image's bundled sample images."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def demo_files(names: tuple[str, ...] = DEMO_PHOTOS) -> list[Path]:
    """Paths of the demo photos (all present in any scikit-image >= 0.19 wheel)."""
    folder = demo_folder()
    return [folder / n for n in names]
