"""One-to-one matching of two detection sets, for comparing with the official detections.

Detections with equal scores come out in an arbitrary order, so sets are compared, not rows: a pair
matches when it has the same class, scores within a tolerance and boxes overlapping almost fully.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Match(NamedTuple):
    pairs: list[tuple[int, int]]  # (expected row, actual row)
    max_score_difference: float  # over the matched pairs; 0 when none
    min_iou: float  # over the matched pairs; 1 when none

    @property
    def num_matched(self) -> int:
        return len(self.pairs)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """[Na, Nb] IoU of yxyx boxes; 0 where a union is empty."""
    boxes_a, boxes_b = np.asarray(boxes_a, np.float64), np.asarray(boxes_b, np.float64)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(np.clip(boxes_a[:, 2:] - boxes_a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(boxes_b[:, 2:] - boxes_b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - intersection
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def match_detections(
    expected: tuple[np.ndarray, np.ndarray, np.ndarray],
    actual: tuple[np.ndarray, np.ndarray, np.ndarray],
    score_tolerance: float = 1e-4,
    min_iou: float = 0.99,
) -> Match:
    """Greedy one-to-one matching of (boxes [N, 4], scores [N], classes [N]) detection sets.

    Among the pairs with equal class, |score difference| <= score_tolerance and IoU >= min_iou,
    the pairs are taken best IoU first, each detection at most once.
    """
    expected_boxes, expected_scores, expected_classes = (np.asarray(a) for a in expected)
    actual_boxes, actual_scores, actual_classes = (np.asarray(a) for a in actual)
    iou = box_iou(expected_boxes, actual_boxes)
    score_difference = np.abs(expected_scores[:, None] - actual_scores[None, :])
    feasible = (
        (expected_classes[:, None] == actual_classes[None, :])
        & (score_difference <= score_tolerance)
        & (iou >= min_iou)
    )
    rows, columns = np.nonzero(feasible)
    order = np.argsort(-iou[rows, columns], kind="stable")
    pairs, used_rows, used_columns = [], set(), set()
    for row, column in zip(rows[order], columns[order]):
        if row not in used_rows and column not in used_columns:
            pairs.append((int(row), int(column)))
            used_rows.add(row)
            used_columns.add(column)
    if not pairs:
        return Match(pairs, 0.0, 1.0)
    matched_rows, matched_columns = (np.array(index) for index in zip(*pairs))
    return Match(
        pairs,
        float(score_difference[matched_rows, matched_columns].max()),
        float(iou[matched_rows, matched_columns].min()),
    )
