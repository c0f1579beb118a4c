"""Detections from the raw network outputs: the official EfficientDet post-processing.

Per-level class logits and box regressions are flattened in anchor order, turned into scores
(sigmoid) and boxes (decoded against the anchors), and reduced by non-maximum suppression in one of
three modes:

- `global`: each anchor keeps its best class; one NMS over all anchors, classes ignored.
- `per_class`: each anchor keeps its best class; NMS within each class, then the best overall.
- `combined`: `tf.image.combined_non_max_suppression` over every (anchor, class) pair, always hard
  NMS at that op's default IoU threshold, 0.5: like the official code, it reads only
  `nms_configs.score_thresh` and `max_output_size` (not `method`, `sigma`, `iou_thresh`).

With `nms_configs.max_nms_inputs` > 0, `global` and `per_class` first keep only that many best
(anchor, class) pairs instead of each anchor's best class; `combined` never prunes (official).
`global` and `per_class` rank candidates by their logits (the sigmoid is monotonic), take the
sigmoid and decode boxes of the candidates only, and look a class up only where one is needed
(`Postprocessor._select_by_score`): the detections of the definition, at a fraction of its cost
(tests/test_postprocess_candidates.py).

Like the official code, `global` and `combined` clip boxes to the network input before scaling them
back to original pixels, and `per_class` does not clip. A 0 in `iou_thresh`, `score_thresh` or
`sigma` stands for the default, as null does (the official `value or default`).

Written in `keras.ops`: it runs on every Keras backend, eagerly or compiled, and on TensorFlow
inside a `tf.function` or an exported SavedModel, with a dynamic batch size. NMS itself is
`inference.nms` (TensorFlow's fused kernels on TensorFlow).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, Sequence

import numpy as np
from keras import ops

from efficientdet_tf.anchors import Anchors, decode_boxes, per_anchor
from efficientdet_tf.inference import nms

log = logging.getLogger(__name__)

POSTPROCESS_MODES = ("global", "per_class", "combined")
# The values of nms_configs.method (the config's schema reads them): soft-NMS and hard NMS.
NMS_METHODS = ("gaussian", "hard")

# What the null values of `nms_configs` stand for: the official defaults (see hparams/base.yaml;
# the config reads their official 0 as null).
DEFAULT_HARD_NMS_IOU_THRESHOLD = 0.5
DEFAULT_SOFT_NMS_SCORE_THRESHOLD = 0.001
DEFAULT_SOFT_NMS_SIGMA = 0.5
# The IoU threshold of the `combined` mode, whatever nms_configs.iou_thresh says: the official
# `postprocess_combined` calls tf.image.combined_non_max_suppression without one, so the op's
# default applies.
COMBINED_NMS_IOU_THRESHOLD = 0.5


class Detections(NamedTuple):
    """Batched detections padded to `max_output_size`; padding rows are all zeros.

    boxes: float32 [batch, max_output_size, 4], [ymin, xmin, ymax, xmax] in original-image pixels.
    scores: float32 [batch, max_output_size], best first.
    classes: float32 [batch, max_output_size], 1-based class ids.
    num_detections: int32 [batch], how many rows of each image are detections.
    """

    boxes: Any
    scores: Any
    classes: Any
    num_detections: Any


@dataclass(frozen=True)
class NmsParameters:
    """Arguments of one NMS method, with the config's nulls replaced by the official defaults."""

    iou_threshold: float
    score_threshold: float
    soft_nms_sigma: float  # as the paper defines it; 0 for hard NMS

    @classmethod
    def from_config(cls, nms_configs, method: str) -> "NmsParameters":
        """`method` is 'hard' or 'gaussian' (soft-NMS, which suppresses by score decay only)."""
        if method == "hard":
            return cls(
                iou_threshold=_default_if_none(nms_configs.iou_thresh,
                                               DEFAULT_HARD_NMS_IOU_THRESHOLD),
                score_threshold=_default_if_none(nms_configs.score_thresh, float("-inf")),
                soft_nms_sigma=0.0,
            )
        if method == "gaussian":
            return cls(
                iou_threshold=1.0,  # soft-NMS only decays scores: no overlap removes a box outright
                score_threshold=_default_if_none(
                    nms_configs.score_thresh, DEFAULT_SOFT_NMS_SCORE_THRESHOLD
                ),
                soft_nms_sigma=_default_if_none(nms_configs.sigma, DEFAULT_SOFT_NMS_SIGMA),
            )
        raise ValueError(f"Unknown NMS method {method!r}: expected one of {NMS_METHODS}.")

    @classmethod
    def for_mode(cls, nms_configs, mode: str) -> "NmsParameters":
        """The parameters a post-processing mode uses: `combined` is hard NMS at
        COMBINED_NMS_IOU_THRESHOLD (official), the others follow nms_configs.method."""
        if mode != "combined":
            return cls.from_config(nms_configs, nms_configs.method)
        if nms_configs.iou_thresh:
            _warn_once(
                f"nms_configs.iou_thresh = {nms_configs.iou_thresh} is not used by the combined "
                f"post-processing mode: like the official one, it always uses IoU "
                f"{COMBINED_NMS_IOU_THRESHOLD} (use the global or per_class mode for another)."
            )
        return replace(cls.from_config(nms_configs, "hard"),
                       iou_threshold=COMBINED_NMS_IOU_THRESHOLD)


def _gather_rows(values, indices):
    """Rows [batch, n, width] of values [batch, rows, width] at indices [batch, n]: one gather
    over the batch's rows (keras's take_along_axis broadcasts and transposes all of `values` on
    TensorFlow, 17 MB for D0's logits)."""
    num_rows, width = values.shape[1], values.shape[2]
    offsets = ops.arange(ops.shape(indices)[0], dtype=indices.dtype)[:, None] * num_rows
    rows = ops.take(ops.reshape(values, (-1, width)), ops.reshape(indices + offsets, (-1,)),
                    axis=0)
    return ops.reshape(rows, (-1, indices.shape[1], width))


def _default_if_none(value, default):
    """`default` for a null value (the config reads the official 0 of these keys as null, as the
    official code's `value or default`)."""
    return default if value is None else value


@functools.cache
def _warn_once(message: str) -> None:
    log.warning(message)


class Postprocessor:
    """Turns per-level network outputs into `Detections`; build once per config and mode.

    Call with `class_outputs` (logits, [batch, H, W, anchors_per_location * num_classes]) and
    `box_outputs` ([batch, H, W, anchors_per_location * 4]), each a list ordered
    min_level..max_level, and optionally `image_scales` ([batch] or scalar; network-input pixels ->
    original pixels).
    """

    def __init__(self, config, mode: str = "global"):
        if mode not in POSTPROCESS_MODES:
            raise ValueError(f"Unknown post-processing mode {mode!r}: expected one of "
                             f"{POSTPROCESS_MODES}.")
        self.mode = mode
        self.num_classes = config.num_classes
        self.image_size = config.image_size
        self.anchors = Anchors.from_config(config)
        self.max_output_size = config.nms_configs.max_output_size
        self.max_nms_inputs = config.nms_configs.max_nms_inputs
        self.nms_parameters = NmsParameters.for_mode(config.nms_configs, mode)
        self._check_sizes()
        self._anchor_boxes = self.anchors.boxes.astype(np.float32)

    def _check_sizes(self) -> None:
        if self.max_output_size < 1:
            raise ValueError(
                f"nms_configs.max_output_size must be at least 1, got {self.max_output_size}."
            )
        num_pairs = len(self.anchors) * self.num_classes
        if not 0 <= self.max_nms_inputs <= num_pairs:
            raise ValueError(
                f"nms_configs.max_nms_inputs = {self.max_nms_inputs} must be in [0, {num_pairs}] "
                f"(0 keeps every anchor; {num_pairs} is anchors x classes)."
            )

    @property
    def nms_settings(self) -> nms.NmsSettings:
        params = self.nms_parameters
        return nms.NmsSettings(self.max_output_size, params.iou_threshold,
                               params.score_threshold, params.soft_nms_sigma)

    def __call__(self, class_outputs, box_outputs, image_scales=None) -> Detections:
        class_levels = self._flatten_levels(class_outputs, self.num_classes, "class_outputs")
        box_regressions = ops.concatenate(
            self._flatten_levels(box_outputs, 4, "box_outputs"), axis=1)
        if self.mode == "combined":
            boxes = decode_boxes(box_regressions, self._anchor_boxes)
            scores = ops.sigmoid(ops.concatenate(class_levels, axis=1))
            kept = nms.Selection(*nms.kernels().select_per_class_pairs(
                boxes, scores, self.nms_settings))
        else:
            kept = self._select_by_score(class_levels, box_regressions)
        detections = self._detections(kept)
        if self.mode != "per_class":
            detections = detections._replace(boxes=self._clip_to_image(detections.boxes))
        if image_scales is not None:
            scales = ops.reshape(ops.cast(image_scales, "float32"), (-1, 1, 1))
            detections = detections._replace(boxes=detections.boxes * scales)
        return detections

    def merge_levels(self, class_outputs, box_outputs) -> tuple[Any, Any]:
        """Per-level outputs -> float32 logits [batch, anchors, num_classes] and box regressions
        [batch, anchors, 4], in the order of `self.anchors.boxes`."""
        class_levels = self._flatten_levels(class_outputs, self.num_classes, "class_outputs")
        box_levels = self._flatten_levels(box_outputs, 4, "box_outputs")
        return ops.concatenate(class_levels, axis=1), ops.concatenate(box_levels, axis=1)

    # --- candidates ---------------------------------------------------------------------------

    def _flatten_levels(self, outputs: Sequence, values_per_anchor: int, name: str) -> list:
        """Per-level [batch, H, W, anchors * values] -> per-level [batch, level anchors, values];
        concatenated, they are in anchor order."""
        levels = self.anchors.levels
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(levels):
            got = (
                f"{len(outputs)} items"
                if isinstance(outputs, (list, tuple))
                else type(outputs).__name__
            )
            raise ValueError(
                f"{name} must be a list of {len(levels)} tensors, one per level "
                f"{levels[0]}..{levels[-1]}; got {got}."
            )
        channels = self.anchors.num_anchors_per_location * values_per_anchor
        flattened = []
        for level, output in zip(levels, outputs):
            output = ops.convert_to_tensor(output)
            expected_shape = (*self.anchors.level_sizes[level], channels)
            if len(output.shape) != 4 or tuple(output.shape[1:]) != expected_shape:
                raise ValueError(
                    f"{name} of level {level} has shape {tuple(output.shape)}; expected [batch, "
                    f"{expected_shape[0]}, {expected_shape[1]}, {channels}] "
                    f"({self.anchors.num_anchors_per_location} anchors x {values_per_anchor})."
                )
            flattened.append(per_anchor(ops.cast(output, "float32"), values_per_anchor))
        return flattened

    def _select_by_score(self, class_levels: list, box_regressions) -> nms.Selection:
        """NMS by score (`global`, `per_class`) over every anchor with its best class, or with
        max_nms_inputs over the best (anchor, class) pairs.

        Candidates are ranked by their logits (the sigmoid is monotonic), and a class is found
        only where it is needed: `global` without max_nms_inputs suppresses whatever the
        classes, so it runs NMS on each anchor's best logit (a max over its classes) and finds
        the classes of the kept anchors afterwards (ONNX Runtime's argmax over every anchor's
        classes took 10x its max). Both give the detections of ranking every anchor's best class
        first.
        """
        anchor_boxes = self._anchor_boxes
        class_after_nms = self.max_nms_inputs == 0 and self.mode == "global"
        if self.max_nms_inputs > 0:
            logits, anchor_indices, labels = self._top_pairs(class_levels)
            box_regressions = _gather_rows(box_regressions, anchor_indices)
            anchor_boxes = ops.take(anchor_boxes, anchor_indices, axis=0)
        elif class_after_nms:
            logits = self._best_logits(class_levels)
            # The NMS carries each candidate's anchor index in place of its class.
            labels = ops.broadcast_to(ops.arange(len(self.anchors), dtype="int32")[None],
                                      ops.shape(logits))
        else:
            logits, labels = self._best_classes(class_levels)
        kept = nms.Selection(*nms.kernels().select_by_score(
            decode_boxes(box_regressions, anchor_boxes), ops.sigmoid(logits),
            ops.cast(labels, "int32"), self.nms_settings, self.mode == "per_class",
            self.num_classes))
        if class_after_nms:
            _, classes = self._best_classes([self._anchor_logits(class_levels, kept.classes)])
            kept = kept._replace(classes=ops.cast(classes, "int32"))
        return kept

    @staticmethod
    def _best_logits(class_levels: list):
        """Each anchor's best class logit [batch, anchors].

        A max over the rows of a 2-D [batch * anchors, classes]: tf2onnx turns the max over
        the last axis of [batch, anchors, classes] into a GlobalMaxPool, which ONNX Runtime
        runs 10x slower than this ReduceMax.
        """
        return ops.concatenate([
            ops.reshape(ops.max(ops.reshape(level, (-1, level.shape[2])), axis=1),
                        (-1, level.shape[1]))
            for level in class_levels], axis=1)

    @staticmethod
    def _best_classes(class_levels: list):
        """Each anchor's best class logit and that class [batch, anchors] (the lowest on ties).

        Level by level: concatenating all the logits first would copy anchors x classes floats
        (17 MB for D0) for nothing. top_k with k=1 finds max and argmax in one pass, 2x faster
        than both on TensorFlow.
        """
        best = [ops.top_k(level, k=1) for level in class_levels]
        return (ops.concatenate([values[..., 0] for values, _ in best], axis=1),
                ops.concatenate([indices[..., 0] for _, indices in best], axis=1))

    def _anchor_logits(self, class_levels: list, anchor_indices):
        """The class logits [batch, n, num_classes] of anchors `anchor_indices` [batch, n],
        gathered level by level (without concatenating all the logits)."""
        rows, start = None, 0
        for level in class_levels:
            count = level.shape[1]
            in_level = anchor_indices - start
            level_rows = _gather_rows(level, ops.clip(in_level, 0, count - 1))
            inside = ((in_level >= 0) & (in_level < count))[..., None]
            rows = level_rows if rows is None else ops.where(inside, level_rows, rows)
            start += count
        return rows

    def _top_pairs(self, class_levels: list):
        """Logits, anchor indices and classes [batch, max_nms_inputs] of the best pairs.

        Each of the K best (anchor, class) pairs has its anchor among the K anchors with the best
        class logits, so the pairs are searched there: the same pairs (up to ties) as a top-k over
        all anchors x classes, at a fraction of the cost.
        """
        num_anchors = min(self.max_nms_inputs, len(self.anchors))
        _, top_anchors = ops.top_k(self._best_logits(class_levels), k=num_anchors, sorted=False)
        pair_logits = self._anchor_logits(class_levels, top_anchors)
        pair_logits = ops.reshape(pair_logits, (-1, num_anchors * self.num_classes))
        top_logits, top_pairs = ops.top_k(pair_logits, k=self.max_nms_inputs, sorted=False)
        anchor_indices = ops.take_along_axis(top_anchors, top_pairs // self.num_classes, axis=1)
        return top_logits, anchor_indices, top_pairs % self.num_classes

    # --- output -------------------------------------------------------------------------------

    def _detections(self, kept: nms.Selection) -> Detections:
        """The selection with 1-based float classes, 0 in the padding rows (where the
        selection's boxes and scores are 0 too)."""
        is_detection = ops.arange(self.max_output_size)[None] < kept.counts[:, None]
        classes = ops.where(is_detection, kept.classes + 1, 0)
        return Detections(kept.boxes, kept.scores, ops.cast(classes, "float32"),
                          ops.cast(kept.counts, "int32"))

    def _clip_to_image(self, boxes):
        """Clips [..., 4] yxyx boxes to the network input (official: before scaling back)."""
        height, width = self.image_size
        limits = np.array([height, width, height, width], np.float32)
        return ops.minimum(ops.maximum(boxes, 0.0), limits)
