"""The distribution of box sizes at the network input against the anchor sizes of each level."""

from __future__ import annotations

import os

import numpy as np

from efficientdet_tf.anchors import Anchors
from efficientdet_tf.diagnostics.anchor_coverage import anchor_shapes
from efficientdet_tf.diagnostics.plotting import new_figure, save_figure

_BINS = 40


def plot_box_sizes(input_boxes: np.ndarray, anchors: Anchors, path: str | os.PathLike) -> None:
    """A histogram of √(height × width) of the boxes ([N, 4] network-input pixels), log scale,
    with the range of anchor sizes of each level shaded and named."""
    sides = np.sqrt(np.maximum(input_boxes[:, 2] - input_boxes[:, 0], 0)
                    * np.maximum(input_boxes[:, 3] - input_boxes[:, 1], 0))
    level_sides = {level: np.sqrt(np.prod(shapes, axis=1))
                   for level, shapes in anchor_shapes(anchors).items()}
    low = min(sides[sides > 0].min(initial=np.inf), min(s.min() for s in level_sides.values()))
    high = max(sides.max(initial=0), max(s.max() for s in level_sides.values()))
    bins = np.geomspace(max(low / 1.5, 0.1), high * 1.5, _BINS)
    figure = new_figure(8, 4.5)
    axes = figure.add_subplot()
    for index, (level, level_side) in enumerate(level_sides.items()):
        axes.axvspan(level_side.min(), level_side.max(), color=f"C{index + 1}", alpha=0.2,
                     label=f"anchors of level P{level} ({level_side.min():.0f}-"
                           f"{level_side.max():.0f} px)")
    axes.hist(sides, bins=bins, color="C0", label=f"{len(sides)} ground-truth boxes")
    axes.set_xscale("log")
    height, width = anchors.image_size
    axes.set_title(f"Box sizes at the network input ({height}x{width}) and anchor sizes")
    axes.set_xlabel("box size √(height × width), network-input pixels (log scale)")
    axes.set_ylabel("boxes")
    axes.legend(fontsize="small")
    save_figure(figure, path)
