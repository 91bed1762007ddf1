"""Checks that a file is a real, non-blank PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_with_content(path: Path, min_width: int = 100, min_height: int = 100):
    """Asserts `path` is a PNG of at least the given size that is not blank."""
    from matplotlib import image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    pixels = image.imread(path)
    height, width = pixels.shape[:2]
    assert width >= min_width and height >= min_height, pixels.shape
    gray = pixels[..., :3].mean(axis=-1)
    assert float(np.var(gray)) > 1e-3, f"{path} is blank"
    return pixels
