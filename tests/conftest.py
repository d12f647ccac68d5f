"""Shared test data: a tiny image-folder tree of random images with a learnable class signal."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def random_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n)


def write_image_tree(root: Path, n_train: int = 40, n_test: int = 20, classes: int = 4) -> Path:
    """``root/{train,test}/class<c>/<i>.png``; class c has channel c % 3 darkened (a signal a small
    net picks up)."""
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            x, _ = random_images(n, 10 * c + (split == "test"))
            x[:, :, :, c % 3] //= 4
            for i in range(n):
                Image.fromarray(x[i]).save(d / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    return write_image_tree(tmp_path_factory.mktemp("images") / "tree")


def assert_png_has_content(path: Path) -> None:
    img = np.asarray(Image.open(path).convert("L"), dtype=float)
    assert img.shape[0] > 100 and img.shape[1] > 100, f"{path} is tiny"
    assert img.std() > 5, f"{path} is blank"
