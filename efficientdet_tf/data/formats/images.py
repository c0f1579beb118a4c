"""Image files: checked and made decodable for TFRecords (PIL), sized from their header, and decoded
in the input graph (TF).

Records keep the original JPEG or PNG bytes when TensorFlow decodes them as they are (RGB or
grayscale JPEG; RGB, RGBA, grayscale or palette PNG). Anything else that PIL can read (CMYK JPEG,
BMP, TIFF, WebP, ...) is converted to RGB and stored as lossless PNG. Unreadable files (empty,
truncated, corrupt) raise `BadImageError` so that a converter can skip and count them.
"""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
import PIL.Image
import tensorflow as tf

_KEPT_AS_IS = {"JPEG": ("RGB", "L"), "PNG": ("RGB", "RGBA", "L", "LA", "P")}


class BadImageError(ValueError):
    """An image file that cannot be used; `reason` says why in a few words, to count by."""

    def __init__(self, path: str | Path, reason: str, detail: str = ""):
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason


@dataclasses.dataclass
class EncodedImage:
    """Image bytes as stored in a record, with the size of the decoded image."""

    data: bytes
    format: str  # 'jpeg' or 'png'
    height: int
    width: int
    converted_from: str | None = None  # e.g. 'JPEG CMYK' when the bytes were re-encoded


def read_image_for_record(path: str | Path) -> EncodedImage:
    """Reads and fully decodes an image file; re-encodes it as PNG when TF could not decode it."""
    data, image = _read_decoded(Path(path))
    width, height = image.size
    if image.mode in _KEPT_AS_IS.get(image.format, ()):
        return EncodedImage(data, image.format.lower(), height, width)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return EncodedImage(buffer.getvalue(), "png", height, width, f"{image.format} {image.mode}")


def read_rgb_image(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [height, width, 3]; raises `BadImageError` naming the file."""
    return np.asarray(_read_decoded(Path(path))[1].convert("RGB"))


def _read_decoded(path: Path) -> tuple[bytes, PIL.Image.Image]:
    """The file's bytes and its fully decoded image."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BadImageError(path, "file not found") from None
    except IsADirectoryError:
        raise BadImageError(path, "a directory, not an image file") from None
    if not data:
        raise BadImageError(path, "empty file")
    try:
        image = PIL.Image.open(io.BytesIO(data))
        image.load()  # Decodes every pixel: a truncated or corrupt file fails here.
    except PIL.UnidentifiedImageError:  # its message names a BytesIO object, not the file
        raise BadImageError(path, "unreadable image (corrupt or truncated)") from None
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise BadImageError(path, "unreadable image (corrupt or truncated)", str(error)) from None
    return data, image


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header; `BadImageError` when it is no image."""
    path = Path(path)
    if not path.is_file():
        raise BadImageError(path, "image not found")
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, "unreadable image", str(error)) from None
    return height, width


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG / PNG / GIF / BMP bytes -> uint8 [height, width, 3] RGB (grayscale is replicated)."""
    image = tf.io.decode_image(encoded, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
