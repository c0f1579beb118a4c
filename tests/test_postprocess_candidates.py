"""The post-processing's shortcuts (max over classes, classes of the kept anchors only, pairs
searched level by level) give the detections of the plain definition: every anchor's best class
(or, with max_nms_inputs, a top-k over every (anchor, class) pair), decoded and passed to NMS.
On TensorFlow only (the other backends compile each NMS loop anew, 45 s a case on JAX): the
shortcuts are the same keras.ops on every backend, and tests/test_postprocess.py runs them
against the official detections on each."""

import numpy as np
import pytest
from keras import ops

from efficientdet_tf.anchors import decode_boxes
from efficientdet_tf.config import get_config
from efficientdet_tf.inference import nms
from efficientdet_tf.inference.postprocess import Postprocessor

NUM_CLASSES = 4
MAX_NMS_INPUTS = 60


def config_of(method, max_nms_inputs):
    return get_config("efficientdet-d0", {
        "image_size": 64, "num_classes": NUM_CLASSES, "nms_configs.method": method,
        "nms_configs.max_nms_inputs": max_nms_inputs, "nms_configs.max_output_size": 30})


def random_logits(kind, rng, shape):
    """Logits [anchors, classes] of one kind: distinct values, coarse values (many ties, within
    an anchor too), flat (all equal, as random weights give), or an anchor's classes all tied."""
    if kind == "distinct":
        return rng.normal(-2.0, 2.0, shape)
    if kind == "coarse":
        return np.round(rng.normal(-2.0, 2.0, shape) * 2) / 2
    if kind == "flat":
        return np.full(shape, -4.6)
    logits = np.round(rng.normal(-2.0, 1.0, shape))
    logits[rng.random(shape[0]) < 0.3] = 1.0  # anchors whose classes all tie at the top
    return logits


def batch_of(kinds, anchors, seeds=(0, 1, 2)):
    """Merged logits [batch, anchors, classes] and box regressions [batch, anchors, 4]: one
    image per (kind, seed)."""
    logits, regressions = [], []
    for kind in kinds:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            logits.append(random_logits(kind, rng, (len(anchors), NUM_CLASSES)))
            regressions.append(rng.normal(0.0, 0.3, (len(anchors), 4)))
    return np.float32(logits), np.float32(regressions)


def per_level(merged, anchors):
    """[batch, anchors, values] in anchor order -> per level [batch, H, W, per location]."""
    parts = np.split(merged, np.cumsum(list(anchors.num_anchors_per_level.values()))[:-1], 1)
    return [part.reshape(len(merged), *anchors.level_sizes[level], -1)
            for level, part in zip(anchors.levels, parts)]


def reference_selection(postprocessor, mode, logits, regressions):
    """NMS by the definition: candidates ranked over all anchors (x classes), nothing skipped."""
    batch = np.arange(len(logits))[:, None]
    if postprocessor.max_nms_inputs:
        pairs = logits.reshape(len(logits), -1)
        # Best first, ties to the lower (anchor, class): a stable sort of the negated logits.
        top = np.argsort(-pairs, axis=1, kind="stable")[:, :postprocessor.max_nms_inputs]
        anchor_indices, classes = top // NUM_CLASSES, top % NUM_CLASSES
        candidate_logits = pairs[batch, top]
    else:
        anchor_indices = np.broadcast_to(np.arange(logits.shape[1]), logits.shape[:2])
        classes = np.argmax(logits, axis=-1)  # the lowest class on ties
        candidate_logits = logits.max(axis=-1)
    boxes = decode_boxes(regressions[batch, anchor_indices],
                         postprocessor.anchors.boxes[anchor_indices])
    return nms.Selection(*nms.kernels().select_by_score(
        boxes, ops.sigmoid(candidate_logits), np.int32(classes), postprocessor.nms_settings,
        mode == "per_class", NUM_CLASSES))


@pytest.mark.parametrize("method", ["hard", "gaussian"])
@pytest.mark.parametrize("mode", ["global", "per_class"])
@pytest.mark.parametrize("max_nms_inputs", [0, MAX_NMS_INPUTS], ids=["all", "top_k"])
def test_detections_are_those_of_every_anchor_ranked_by_its_best_class(method, mode,
                                                                       max_nms_inputs):
    postprocessor = Postprocessor(config_of(method, max_nms_inputs), mode)
    anchors = postprocessor.anchors
    # A top-k over pairs keeps tied pairs in an order of its own, which NMS's ties then follow:
    # the pruned path is compared on distinct logits.
    kinds = (["distinct"] if max_nms_inputs else ["distinct", "coarse", "flat", "tied_anchors"])
    logits, regressions = batch_of(kinds, anchors)
    detections = postprocessor(per_level(logits, anchors), per_level(regressions, anchors))
    expected = reference_selection(postprocessor, mode, logits, regressions)

    counts = np.asarray(expected.counts)
    assert counts.min() > 0
    np.testing.assert_array_equal(np.asarray(detections.num_detections), counts)
    is_detection = np.arange(postprocessor.max_output_size)[None] < counts[:, None]
    np.testing.assert_array_equal(np.asarray(detections.classes),
                                  np.where(is_detection, np.asarray(expected.classes) + 1, 0))
    # Soft-NMS decays in the order of the candidates, which may differ in the last bit.
    np.testing.assert_allclose(np.asarray(detections.scores), np.asarray(expected.scores),
                               rtol=1e-6)
    expected_boxes = np.asarray(expected.boxes)
    if mode == "global":  # clipped to the network input (official)
        expected_boxes = np.clip(expected_boxes, 0.0, 64.0)
    np.testing.assert_allclose(np.asarray(detections.boxes), expected_boxes, rtol=1e-6,
                               atol=1e-5)
