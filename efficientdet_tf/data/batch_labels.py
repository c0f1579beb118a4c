"""The keys of a batch's labels: the input pipeline writes them; the losses, the training step and
evaluation read them. Shapes and meanings are in `pipeline`'s docstring."""

from __future__ import annotations

MEAN_NUM_POSITIVES = "mean_num_positives"
SOURCE_IDS = "source_ids"
IMAGE_SCALES = "image_scales"
GROUNDTRUTH = "groundtruth_data"
SEGMENTATION_MASKS = "segmentation_masks"
IMAGE_SIZES = "image_sizes"

# The columns of a GROUNDTRUTH row: box (ymin, xmin, ymax, xmax), is_crowd, area, class id.
GROUNDTRUTH_BOX, GROUNDTRUTH_CROWD, GROUNDTRUTH_AREA, GROUNDTRUTH_CLASS = slice(0, 4), 4, 5, 6
GROUNDTRUTH_COLUMNS = 7


def class_targets(level: int) -> str:
    """The key of the anchor class targets of feature level `level`."""
    return f"cls_targets_{level}"


def box_targets(level: int) -> str:
    """The key of the anchor box targets of feature level `level`."""
    return f"box_targets_{level}"
