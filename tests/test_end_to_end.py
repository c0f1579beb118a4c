"""End to end on the official fixture: uint8 input.png in, the official detections out.

The fixture's weights are random: every anchor scores about 0.05, so NMS chooses among thousands of
near-equal candidates. Our network reproduces the official logits to 1-2 ulp, not bit for bit
(about 5% differ in the last bit; folding batch norm changes a few more), and a last-bit
difference can pick another anchor of equal score: the box then differs while score and class
agree. So detections are compared with the official ones on (class, score), one to one, and each
box must be the box of an official candidate anchor (see `detection_candidates`).
"""

import numpy as np
import pytest
import tensorflow as tf

from detection_candidates import count_on_candidates, decoded_candidates
from detection_matching import match_detections
from efficientdet_tf.config import get_config
from efficientdet_tf.inference.detector import Detector, detections_from_dict
from efficientdet_tf.inference.postprocess import MODES
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import load_weights
from official_fixture import (
    FIXTURE_DIR,
    FIXTURE_MODEL,
    expected_detections,
    expected_outputs,
    input_image,
    raw_outputs,
    requires_fixture,
)

MIN_MATCHED = 95
SCORE_TOLERANCE = 1e-4
MIN_IOU = 0.99


@pytest.fixture(scope="module")
def fixture_model():
    model = build_model(get_config(FIXTURE_MODEL))
    load_weights(model, FIXTURE_DIR / "ckpt")
    return model


@requires_fixture
@pytest.mark.parametrize("mode", MODES)
def test_compiled_detector_gives_the_official_detections(fixture_model, mode):
    detector = Detector(get_config(FIXTURE_MODEL), fixture_model, mode)
    outputs = detector.inference_function()(tf.constant(input_image()[np.newaxis]))
    detections = detections_from_dict(outputs)
    assert detections.num_detections.numpy().tolist() == [100]
    actual = tuple(value[0].numpy() for value in detections[:3])

    match = match_detections(expected_detections(mode), actual, SCORE_TOLERANCE, min_iou=0.0)
    assert match.num_matched >= MIN_MATCHED, (
        f"{mode}: {match.num_matched}/100 matched in class and score "
        f"(max score difference {match.max_score_difference:.2e})"
    )
    candidates = decoded_candidates(
        detector.config, mode, *raw_outputs(), expected_outputs()["image_scale"])
    on_candidates = count_on_candidates(actual, candidates, SCORE_TOLERANCE, MIN_IOU)
    assert on_candidates >= MIN_MATCHED, f"{mode}: {on_candidates}/100 boxes are official anchors"
