"""Semantic segmentation masks: uint8 [height, width], the class of each pixel, `IGNORE_LABEL` where
no class counts (Pascal VOC object boundaries, padding).

Mask files are PNGs of class indices: palette PNGs (Pascal VOC `SegmentationClass/`) whose palette
indices are the classes (the colours only show them), or grayscale PNGs. PIL reads the indices;
TensorFlow's PNG decoder would return the palette's colours, so records store masks as grayscale
PNGs (`encode_mask`), which the graph decodes as they are (`decode_mask`); records written by
other tools must hold grayscale masks too (as the TF DeepLab tooling writes them after its
remove_gt_colormap step). `write_mask` saves a mask as Pascal VOC does, a palette PNG with VOC's
colour map, which `read_mask` and the VOC tools read back as indices.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import PIL.Image
import tensorflow as tf

from efficientdet_tf.data.formats.images import BadImageError, EncodedImage
from efficientdet_tf.output_files import written_whole

IGNORE_LABEL = 255
_INDEX_MODES = ("P", "L")  # palette indices, or gray levels that are the classes


def _voc_colour_map() -> np.ndarray:
    """Pascal VOC's colour of each of the 256 indices, uint8 [256, 3]: the bits of an index spread
    over the high bits of red, green and blue in turn (1 -> dark red, 255 -> cream)."""
    colours = np.zeros((256, 3), np.uint8)
    for index in range(256):
        value = index
        for bit in range(7, -1, -1):
            for channel in range(3):
                colours[index, channel] |= ((value >> channel) & 1) << bit
            value >>= 3
    return colours


VOC_COLOURS = _voc_colour_map()


def read_mask(path: str | Path) -> np.ndarray:
    """The class indices of a mask PNG, uint8 [height, width]; `BadImageError` naming the file
    when it is missing, unreadable, or holds colours rather than indices."""
    path = Path(path)
    try:
        with PIL.Image.open(path) as image:
            image.load()
            mode, mask = image.mode, np.asarray(image, np.uint8)
    except FileNotFoundError:
        raise BadImageError(path, "mask not found") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise BadImageError(path, "unreadable mask", str(error)) from None
    if mode not in _INDEX_MODES:
        raise BadImageError(path, "mask is not a palette or grayscale PNG",
                            f"mode {mode}; save the class indices")
    return mask


def write_mask(mask: np.ndarray, path: str | Path) -> None:
    """Saves uint8 class indices [height, width] as a palette PNG with VOC's colours."""
    image = PIL.Image.fromarray(np.asarray(mask, np.uint8), mode="P")
    image.putpalette(VOC_COLOURS.tobytes())
    with written_whole(path, "Mask") as partial:
        image.save(partial, format="PNG")


def encode_mask(mask: np.ndarray) -> EncodedImage:
    """A mask as the grayscale PNG stored in records."""
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.asarray(mask, np.uint8), mode="L").save(buffer, format="PNG")
    height, width = mask.shape
    return EncodedImage(buffer.getvalue(), "png", height, width)


def decode_mask(encoded: tf.Tensor) -> tf.Tensor:
    """Grayscale PNG bytes (`encode_mask`) -> uint8 [height, width]."""
    return tf.io.decode_png(encoded, channels=1)[:, :, 0]


def read_mask_in_graph(path: tf.Tensor) -> tf.Tensor:
    """`read_mask` inside the input graph (palette PNGs need PIL); raises in the graph when the
    mask cannot be read, so that the sources drop the example with a logged warning."""
    mask = tf.numpy_function(lambda p: read_mask(p.decode()), [path], tf.uint8, stateful=False)
    return tf.ensure_shape(mask, [None, None])


def check_mask_fits(mask: tf.Tensor, image: tf.Tensor) -> tf.Tensor:
    """The mask, after asserting (in the graph) that it has the image's height and width."""
    with tf.control_dependencies([tf.debugging.assert_equal(
            tf.shape(mask), tf.shape(image)[:2],
            message="segmentation mask size differs from the image size")]):
        return tf.identity(mask)
