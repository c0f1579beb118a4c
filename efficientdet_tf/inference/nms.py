"""Non-maximum suppression, batched, on every Keras backend.

`select_by_score` (one NMS over all candidates, or one per class) and `select_per_class_pairs`
(every (anchor, class) pair, the official `combined` mode) are written in `keras.ops` around
`greedy_nms`. The TensorFlow backend has the same two functions with TensorFlow's fused kernels
(`backends.tensorflow_nms`: `NonMaxSuppressionV5`, `combined_non_max_suppression`, what exported
SavedModels and TFLite files contain, and faster there); `kernels()` is the module that runs.
Both give the same detections (tests/test_nms.py runs both on TensorFlow).

`greedy_nms` computes what `NonMaxSuppressionV5` computes: candidates with a score above the
score threshold, best first (the lower index on ties); hard NMS drops the candidates whose IoU
with a kept box exceeds the IoU threshold; soft-NMS multiplies their scores by
exp(-IoU^2 / sigma) and drops those that fall to the score threshold. It keeps the scores of all
candidates up to date after each pick, where the kernel updates them lazily; multiplications in
another order can differ in the last bit.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

from keras import ops

from efficientdet_tf import backends

# `select_per_class_pairs` without TensorFlow's kernel: the candidates of each class are its
# best-scored anchors, at least this many (and at least max_output_size). The result is the
# kernel's unless one class has this many candidates suppressed before the output is full.
PAIR_CANDIDATES_PER_CLASS = 1000


def kernels():
    """The module whose `select_by_score` and `select_per_class_pairs` run: the Keras backend's
    fused NMS kernels where it has them, else this module's. Both give (boxes, scores, classes,
    counts), which `Selection(*...)` names."""
    return backends.current().fused_nms() or sys.modules[__name__]


class NmsSettings(NamedTuple):
    """Parameters of one NMS run; `soft_nms_sigma` as the paper's, 0 for hard NMS."""

    max_output_size: int
    iou_threshold: float
    score_threshold: float
    soft_nms_sigma: float


class Selection(NamedTuple):
    """Kept candidates, best first, padded to max_output_size (padding rows hold zeros).

    boxes: [batch, max_output_size, 4]; scores: [batch, max_output_size];
    classes: int32 [batch, max_output_size], 0-based (`select_by_score`: the labels it was
    given); counts: int32 [batch].
    """

    boxes: object
    scores: object
    classes: object
    counts: object


def select_by_score(boxes, scores, labels, settings: NmsSettings, per_class: bool,
                    num_classes: int) -> Selection:
    """NMS over candidates boxes [batch, K, 4] (yxyx), scores [batch, K] and int32 labels
    [batch, K], which the selection's `classes` carry: over all of them, or with `per_class`
    within each class, the labels being 0-based classes (boxes of other classes never suppress
    each other; the best of all classes are kept). Without `per_class` a label may be anything,
    e.g. the candidate's anchor, whose class is then found for the kept ones only."""
    kept = greedy_nms(boxes, scores, settings, labels if per_class else None)
    return _gather(kept, boxes, labels)


def select_per_class_pairs(boxes, scores, settings: NmsSettings) -> Selection:
    """NMS within each class over all anchors: boxes [batch, anchors, 4], scores
    [batch, anchors, classes]; the best max_output_size of all classes are kept."""
    num_anchors, num_classes = scores.shape[1:]
    per_class = min(num_anchors, max(PAIR_CANDIDATES_PER_CLASS, settings.max_output_size))
    class_scores, anchor_indices = ops.top_k(ops.transpose(scores, (0, 2, 1)), per_class)
    class_scores = ops.reshape(class_scores, (-1, num_classes * per_class))
    anchor_indices = ops.reshape(anchor_indices, (-1, num_classes * per_class))
    classes = ops.repeat(ops.arange(num_classes, dtype="int32"), per_class)
    classes = ops.broadcast_to(classes[None], ops.shape(anchor_indices))
    candidate_boxes = ops.take_along_axis(boxes, anchor_indices[..., None], axis=1)
    kept = greedy_nms(candidate_boxes, class_scores, settings, classes)
    return _gather(kept, candidate_boxes, classes)


class Kept(NamedTuple):
    """What `greedy_nms` keeps: candidate indices, scores (decayed by soft-NMS) and counts."""

    indices: object
    scores: object
    counts: object


def greedy_nms(boxes, scores, settings: NmsSettings, groups=None) -> Kept:
    """Greedy NMS of every image of a batch at once, in `keras.ops`.

    boxes [batch, K, 4] (corners in either order, as the kernel accepts), scores [batch, K];
    with `groups` [batch, K] (e.g. classes), only boxes of the same group suppress each other.
    """
    boxes = ops.convert_to_tensor(boxes, "float32")
    live = ops.convert_to_tensor(scores, "float32")
    corners = _ordered_corners(boxes)
    areas = (corners[..., 2] - corners[..., 0]) * (corners[..., 3] - corners[..., 1])
    live = ops.where(live > settings.score_threshold, live, -float("inf"))
    candidates = ops.arange(ops.shape(live)[1], dtype="int32")[None]
    slots = ops.arange(settings.max_output_size, dtype="int32")[None]
    batch = ops.shape(live)[0]
    kept = Kept(
        indices=ops.zeros((batch, settings.max_output_size), "int32"),
        scores=ops.zeros((batch, settings.max_output_size), "float32"),
        counts=ops.zeros((batch,), "int32"),
    )

    def pick(slot, state):
        live, kept = state
        best = ops.cast(ops.argmax(live, axis=1), "int32")
        best_score = ops.take_along_axis(live, best[:, None], axis=1)[:, 0]
        found = best_score > -float("inf")
        here = (slots == slot) & found[:, None]
        kept = Kept(
            indices=ops.where(here, best[:, None], kept.indices),
            scores=ops.where(here, best_score[:, None], kept.scores),
            counts=kept.counts + ops.cast(found, "int32"),
        )
        overlaps = _iou_with(corners, areas, best)
        if groups is not None:
            same_group = groups == ops.take_along_axis(groups, best[:, None], axis=1)
            overlaps = ops.where(same_group, overlaps, 0.0)
        live = _suppress(live, overlaps, settings)
        live = ops.where(candidates == best[:, None], -float("inf"), live)
        return live, kept

    _, kept = ops.fori_loop(0, settings.max_output_size, pick, (live, kept))
    return kept


def _suppress(live, overlaps, settings: NmsSettings):
    """Scores after a pick with IoUs `overlaps`: hard NMS drops, soft-NMS decays."""
    if settings.soft_nms_sigma > 0:
        live = live * ops.exp(-(overlaps * overlaps) / settings.soft_nms_sigma)
        return ops.where(live > settings.score_threshold, live, -float("inf"))
    return ops.where(overlaps > settings.iou_threshold, -float("inf"), live)


def _ordered_corners(boxes):
    """[..., 4] boxes as [ymin, xmin, ymax, xmax] whatever order their corners come in."""
    y1, x1, y2, x2 = (boxes[..., i] for i in range(4))
    return ops.stack([ops.minimum(y1, y2), ops.minimum(x1, x2),
                      ops.maximum(y1, y2), ops.maximum(x1, x2)], axis=-1)


def _iou_with(corners, areas, index):
    """IoU [batch, K] of each image's box `index` [batch] with all its boxes; 0 where either
    box is empty (as the kernel)."""
    box = ops.take_along_axis(corners, index[:, None, None], axis=1)  # [batch, 1, 4]
    area = ops.take_along_axis(areas, index[:, None], axis=1)
    heights = ops.minimum(corners[..., 2], box[..., 2]) - ops.maximum(corners[..., 0], box[..., 0])
    widths = ops.minimum(corners[..., 3], box[..., 3]) - ops.maximum(corners[..., 1], box[..., 1])
    intersection = ops.maximum(heights, 0.0) * ops.maximum(widths, 0.0)
    union = areas + area - intersection
    nonempty = (areas > 0) & (area > 0)
    return ops.where(nonempty, intersection / ops.where(nonempty, union, 1.0), 0.0)


def _gather(kept: Kept, boxes, classes) -> Selection:
    """The boxes and classes of the kept candidates, zeros in the padding."""
    is_kept = ops.arange(ops.shape(kept.indices)[1])[None] < kept.counts[:, None]
    kept_boxes = ops.take_along_axis(boxes, kept.indices[..., None], axis=1)
    kept_classes = ops.take_along_axis(classes, kept.indices, axis=1)
    return Selection(
        boxes=ops.where(is_kept[..., None], kept_boxes, 0.0),
        scores=ops.where(is_kept, kept.scores, 0.0),
        classes=ops.where(is_kept, kept_classes, 0),
        counts=kept.counts,
    )
