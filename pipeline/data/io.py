"""Image file reading shared by every reader, predictor and the service."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.utils.errors import UserError

# .pgm/.ppm: the Netpbm files of classic face sets (ORL/AT&T faces).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm")


def is_image_file(path: str | Path) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder`` (any case of the known extensions)."""
    folder = Path(folder)
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image_file(p))


def decode_image(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes to an RGB uint8 HxWx3 array; UserError naming ``source`` if invalid."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_COLOR) if buffer.size else None
    if image is None:
        raise UserError(f"{source}: not a readable image (corrupt, truncated or not an image file)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 HxWx3; a missing or corrupt file raises UserError naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read image file ({exc.strerror or exc})") from None
    return decode_image(data, str(path))
