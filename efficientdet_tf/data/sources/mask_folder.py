"""The dataset spec 'masks:<masks_dir>:<images_dir>[:<ids.txt>]': semantic segmentation masks as
Pascal VOC keeps them (`SegmentationClass/<id>.png`, palette PNGs of class indices, 255 = ignore)
beside a folder of images (`<id>.jpg`, or .jpeg / .png / .bmp).

Without `ids.txt` every `*.png` of `masks_dir` is an example; with it, the ids it lists, one a line
(VOC's `ImageSets/Segmentation/train.txt`). Examples have masks and no boxes. Missing or unreadable
images or masks, and masks whose size differs from their image's, are skipped and counted here
from the file headers; files that fail to decode later are dropped with a logged warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from efficientdet_tf.data.formats.annotations import ImageAnnotations
from efficientdet_tf.data.formats.images import BadImageError, image_size
from efficientdet_tf.data.sources.base import AnnotatedImagesSource
from efficientdet_tf.data.sources.named_boxes import HoldOut, Skipped

log = logging.getLogger(__name__)

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
USAGE = "'masks:<masks_dir>:<images_dir>[:<ids.txt>][:train:<P>%|:val:<P>%]'"


class MaskFolderSource(AnnotatedImagesSource):
    """The images of `images_dir` that have a usable mask in `masks_dir`; see the module
    docstring. `hold_out` keeps a part of them (see `named_boxes.HoldOut`)."""

    def __init__(
        self,
        masks_dir: str | Path,
        images_dir: str | Path,
        ids_file: str | Path | None = None,
        *,
        hold_out: HoldOut | None = None,
        description: str | None = None,
    ):
        masks_dir, images_dir = Path(masks_dir), Path(images_dir)
        self.description = description or f"masks:{masks_dir}:{images_dir}"
        for folder, what in ((masks_dir, "mask"), (images_dir, "image")):
            if not folder.is_dir():
                raise FileNotFoundError(f"{self.description}: the {what} folder "
                                        f"{str(folder)!r} does not exist; expected {USAGE}.")
        ids = _read_ids(ids_file) if ids_file else sorted(p.stem for p in masks_dir.glob("*.png"))
        if hold_out:
            ids = [i for i, keep in zip(ids, hold_out.keeps(ids)) if keep]
        self.hold_out, self.skipped = hold_out, Skipped()
        checked = (self._checked(example_id, masks_dir, images_dir) for example_id in ids)
        images = [image for image in checked if image]
        if not images:
            raise ValueError(f"{self.description}: no image with a usable mask"
                             + (f"; skipped {self.skipped.count}: {self.skipped}"
                                if self.skipped.count else f" ({len(ids)} ids)."))
        for image_id, image in enumerate(images, start=1):
            image.image_id = image_id
        super().__init__(images, images_dir, class_names={}, mask_dir=masks_dir)
        if self.skipped.count:
            log.warning("%s", self.report())

    def _checked(self, example_id: str, masks_dir: Path, images_dir: Path):
        """The example's (box-less) annotations, or None when skipped (and counted)."""
        image_path = next((images_dir / f"{example_id}{suffix}" for suffix in _IMAGE_SUFFIXES
                           if (images_dir / f"{example_id}{suffix}").is_file()), None)
        mask_path = masks_dir / f"{example_id}.png"
        if image_path is None:
            self.skipped.add("image not found", str(images_dir / f"{example_id}.jpg"))
            return None
        if not mask_path.is_file():
            self.skipped.add("mask not found", str(mask_path))
            return None
        try:
            height, width = image_size(image_path)
        except BadImageError as error:
            self.skipped.add(error.reason, str(image_path))
            return None
        try:
            mask_size = image_size(mask_path)
        except BadImageError:
            self.skipped.add("unreadable mask", str(mask_path))
            return None
        if mask_size != (height, width):
            self.skipped.add("mask size differs from the image", str(mask_path))
            return None
        return ImageAnnotations(0, image_path.name, height, width, [], [], [], [])

    def report(self) -> str:
        """What was found and what was skipped, in a few lines."""
        lines = [f"{self.description}: {self.num_examples} images with masks"]
        if self.hold_out:
            lines.append(f"  {self.hold_out}")
        lines.append(f"  skipped {self.skipped.count}: {self.skipped}" if self.skipped.count
                     else "  skipped: nothing")
        return "\n".join(lines)


def _read_ids(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The list of example ids {str(path)!r} does not exist; give a "
                                "text file with one id (a file name without extension) a line.")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
