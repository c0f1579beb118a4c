"""Drawing on an image with Pillow: a box, class name and score per detection; a mask's classes
blended in their Pascal VOC colours (those of the mask PNGs, `data.formats.masks.write_mask`)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from efficientdet_tf.data.formats.masks import IGNORE_LABEL, VOC_COLOURS
from efficientdet_tf.inference.image_detections import ImageDetections
from efficientdet_tf.label_map import class_name

# Distinct, saturated colours; a class always gets the same one.
_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (0, 0, 128),
)
DEFAULT_MIN_SCORE = 0.4  # official infer default
MASK_OPACITY = 0.6


def draw_detections(
    image: np.ndarray,
    boxes: np.ndarray,
    scores: np.ndarray | None,
    classes: np.ndarray,
    names: dict[int, str] | None = None,
    min_score: float = DEFAULT_MIN_SCORE,
    colour: tuple[int, int, int] | None = None,
) -> Image.Image:
    """A copy of `image` (uint8 [height, width, 3]) with each detection scoring >= `min_score`.

    `boxes` are [N, 4] ymin, xmin, ymax, xmax in the image's pixels, `classes` 1-based ids.
    `scores` None draws every box with its class name only (ground truth). Each class has its
    colour, unless `colour` gives one for all boxes.
    """
    canvas = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    line_width = max(1, round(min(canvas.size) / 200))
    font = ImageFont.load_default(size=max(10, 6 * line_width))
    names = names or {}
    if scores is None:
        scores, min_score = [None] * len(boxes), None
    for box, score, class_id in zip(boxes, scores, classes):
        if score is not None and score < min_score:
            continue
        class_id = int(class_id)
        color = colour or _PALETTE[class_id % len(_PALETTE)]
        ymin, xmin, ymax, xmax = (float(v) for v in box)
        draw.rectangle((xmin, ymin, xmax, ymax), outline=color, width=line_width)
        label = class_name(names, class_id)
        if score is not None:
            label += f": {score:.0%}"
        left, top, right, bottom = draw.textbbox((xmin, ymin), label, font=font)
        top_offset = min(ymin, bottom - top)  # above the box when there is room, else inside
        draw.rectangle((left, top - top_offset, right, bottom - top_offset), fill=color)
        draw.text((xmin, ymin - top_offset), label, fill=(0, 0, 0), font=font)
    return canvas


def draw_outputs(image: np.ndarray, detections: ImageDetections | None, mask: np.ndarray | None,
                 names: dict[int, str]) -> Image.Image:
    """What the heads found in one image, as `--mode=infer` and `--mode=video` draw it: the
    classes of `mask` (when given) in colour, then the boxes of `detections` (all of them: they
    were kept by score already)."""
    if mask is not None:
        image = overlay_mask(image, mask)
    if detections is None:
        return Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    return draw_detections(image, detections.boxes, detections.scores, detections.classes, names,
                           min_score=0.0)


def overlay_mask(image: np.ndarray, mask: np.ndarray, opacity: float = MASK_OPACITY) -> np.ndarray:
    """A copy of `image` (uint8 [height, width, 3]) with each pixel of a class of `mask` (uint8
    [height, width]) blended with the class's colour; background (0) and ignore are left as is."""
    image = np.asarray(image, np.uint8)
    mask = np.asarray(mask)
    blended = (1 - opacity) * image + opacity * VOC_COLOURS[mask].astype(np.float32)
    coloured = (mask != 0) & (mask != IGNORE_LABEL)
    return np.where(coloured[..., None], np.round(blended), image).astype(np.uint8)
