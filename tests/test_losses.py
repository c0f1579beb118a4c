"""The detection and segmentation loss parts against hand-computed values."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from backends import BACKEND

from efficientdet_tf import build_model, get_config
from efficientdet_tf.anchors import feature_sizes
from efficientdet_tf.training.losses import (
    DetectionLoss,
    PositivesNormalizer,
    focal_loss,
    huber_box_loss,
    iou_variant,
    l2_regularization,
    segmentation_cross_entropy,
)


def test_focal_loss_matches_the_formula():
    logit, alpha, gamma = 0.3, 0.25, 1.5
    p = 1 / (1 + math.exp(-logit))
    positive = -alpha * (1 - p) ** gamma * math.log(p)
    negative = -(1 - alpha) * p**gamma * math.log(1 - p)
    value = focal_loss(tf.constant([logit, logit]), tf.constant([1.0, 0.0]), alpha, gamma, 0.0, 2.0)
    assert float(value) == pytest.approx((positive + negative) / 2, rel=1e-5)


def test_label_smoothing_changes_only_the_cross_entropy():
    logits, targets = tf.constant([2.0]), tf.constant([1.0])
    smoothed = focal_loss(logits, targets, 0.25, 1.5, 0.1, 1.0)
    p = 1 / (1 + math.exp(-2.0))
    cross_entropy = -(0.95 * math.log(p) + 0.05 * math.log(1 - p))
    assert float(smoothed) == pytest.approx(0.25 * (1 - p) ** 1.5 * cross_entropy, rel=1e-5)


def test_huber_box_loss_counts_positive_anchors_only():
    outputs = tf.constant([[0.05, 0.3, 9.0, 9.0]])
    targets = tf.constant([[0.0001, 0.0, 0.0, 0.2]])  # zeros mark what is not a target
    delta = 0.1
    expected = 0.5 * (0.05 - 0.0001) ** 2 + delta * (abs(9.0 - 0.2) - 0.5 * delta)
    assert float(huber_box_loss(outputs, targets, delta, 2.0)) == pytest.approx(
        expected / 8.0, rel=1e-5)


def _labels(config, class_target, box_target):
    """Labels with one positive anchor (the first of level 3) and background elsewhere."""
    labels = {}
    sizes = feature_sizes(config.image_size, config.max_level)
    for level in range(config.min_level, config.max_level + 1):
        classes = np.full((1, *sizes[level], 9), -1, np.int32)
        boxes = np.zeros((1, *sizes[level], 36), np.float32)
        if level == config.min_level:
            classes[0, 0, 0, 0] = class_target
            boxes[0, 0, 0, :4] = box_target
        labels[f"cls_targets_{level}"] = tf.constant(classes)
        labels[f"box_targets_{level}"] = tf.constant(boxes)
    return labels


def test_detection_loss_combines_parts_with_the_official_weights():
    config = get_config("efficientdet-d0", "image_size=64,num_classes=2,iou_loss_type=giou")
    labels = _labels(config, 1, [0.1, -0.1, 0.2, 0.0])
    class_outputs = [tf.zeros([1, *labels[f"cls_targets_{lv}"].shape[1:3], 18])
                     for lv in range(3, 8)]
    box_outputs = [tf.zeros([1, *labels[f"box_targets_{lv}"].shape[1:3], 36]) for lv in range(3, 8)]
    parts = DetectionLoss(config)(class_outputs, box_outputs, labels, num_positives=1.0)
    num_logits = sum(int(tf.size(o)) for o in class_outputs)
    # Every logit is 0 (p = 0.5): negatives cost 0.75 * 0.5^1.5 * log 2, the positive 0.25 * ...
    per_negative = 0.75 * 0.5**1.5 * math.log(2)
    per_positive = 0.25 * 0.5**1.5 * math.log(2)
    expected_cls = ((num_logits - 1) * per_negative + per_positive) / 2.0
    assert float(parts["cls_loss"]) == pytest.approx(expected_cls, rel=1e-4)
    # |0.1| <= delta: quadratic; |0.2| > delta: linear; the tw target 0 is not counted.
    expected_box = (2 * 0.5 * 0.1**2 + 0.1 * (0.2 - 0.5 * 0.1)) / 8.0
    assert float(parts["box_loss"]) == pytest.approx(expected_box, rel=1e-4)
    # GIoU of the prediction, the anchor [-12, -12, 20, 20], and the target: centre (7.2, 0.8),
    # 32 e^0.2 high (it covers the anchor's rows) and 32 wide: columns -15.2 .. 16.8.
    target_height = 32 * math.exp(0.2)
    intersection = 32 * (16.8 + 12)
    union = 32 * 32 + target_height * 32 - intersection
    enclosure = target_height * (20 + 15.2)
    giou = intersection / union - (enclosure - union) / enclosure
    assert float(parts["iou_loss"]) == pytest.approx((1 - giou) / 8.0, rel=1e-4)
    assert float(parts["det_loss"]) == pytest.approx(
        float(parts["cls_loss"]) + 50 * float(parts["box_loss"]) + float(parts["iou_loss"]),
        rel=1e-5)


def test_positives_momentum_normalizes_by_the_official_moving_average():
    """official tf2/train_lib.py: from 0, avg = m * avg + (1 - m) * (positives + 1), no bias
    correction; null (today's default), 0 or negative: positives + 1."""
    normalizer = PositivesNormalizer(0.9)
    got = [float(normalizer(tf.constant(n))) for n in (9.0, 19.0, 4.0)]
    expected, average = [], 0.0
    for n in (9.0, 19.0, 4.0):
        average = 0.9 * average + 0.1 * (n + 1)
        expected.append(average)
    assert got == pytest.approx(expected, rel=1e-6)  # 1.0, 2.9, 3.11
    for momentum in (None, 0.0, -1.0):
        assert float(PositivesNormalizer(momentum)(tf.constant(9.0))) == 10.0


def test_positives_momentum_is_alike_on_every_replica():
    """Each replica averages the global batch's positives, read back unchanged as the mean."""
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    strategy = tf.distribute.MirroredStrategy(cpus)
    with strategy.scope():
        normalizer = PositivesNormalizer(0.5)
    step = tf.function(lambda n: strategy.run(normalizer, (n,)))
    step(tf.constant(3.0))
    values = strategy.experimental_local_results(step(tf.constant(7.0)))
    assert [float(v) for v in values] == [0.5 * 2.0 + 0.5 * 8.0] * 2
    assert float(normalizer.average.numpy()) == 5.0  # the mean of the replicas


def test_detection_loss_divides_by_the_moving_normalizer():
    config = get_config("efficientdet-d0", "image_size=64,num_classes=2,positives_momentum=0.75")
    labels = _labels(config, 1, [0.1, -0.1, 0.2, 0.0])
    class_outputs = [tf.zeros([1, *labels[f"cls_targets_{lv}"].shape[1:3], 18])
                     for lv in range(3, 8)]
    box_outputs = [tf.zeros([1, *labels[f"box_targets_{lv}"].shape[1:3], 36]) for lv in range(3, 8)]
    plain = DetectionLoss(config.override("positives_momentum=null"))(
        class_outputs, box_outputs, labels, num_positives=1.0)
    loss = DetectionLoss(config)
    first = loss(class_outputs, box_outputs, labels, num_positives=1.0)  # normalizer 0.5, not 2
    second = loss(class_outputs, box_outputs, labels, num_positives=1.0)  # 0.875
    for part in ("cls_loss", "box_loss"):
        assert float(first[part]) == pytest.approx(float(plain[part]) * 2 / 0.5, rel=1e-5)
        assert float(second[part]) == pytest.approx(float(plain[part]) * 2 / 0.875, rel=1e-5)


def test_perfect_box_predictions_have_no_iou_loss():
    config = get_config("efficientdet-d0", "image_size=64,num_classes=2,iou_loss_type=ciou")
    labels = _labels(config, 0, [0.1, -0.1, 0.2, 0.3])
    box_outputs = [labels[f"box_targets_{lv}"] for lv in range(3, 8)]
    class_outputs = [tf.zeros([1, *labels[f"cls_targets_{lv}"].shape[1:3], 18])
                     for lv in range(3, 8)]
    parts = DetectionLoss(config)(class_outputs, box_outputs, labels, num_positives=1.0)
    assert float(parts["iou_loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(parts["box_loss"]) == 0.0


def test_l2_regularization_covers_kernels_only():
    model = build_model(get_config("efficientdet-d0",
                                   "image_size=64,fpn_cell_repeats=1,box_class_repeats=1"))
    kernels = [v for v in model.trainable_variables if v.path.endswith("kernel")]
    others = [v for v in model.trainable_variables if not v.path.endswith("kernel")]
    assert {v.path.rsplit("/", 1)[-1] for v in others} >= {"gamma", "beta", "bias", "WSM"}
    expected = 4e-5 * sum(float(np.sum(np.square(v.numpy()))) / 2 for v in kernels)
    assert float(l2_regularization(model.trainable_variables, 4e-5)) == pytest.approx(expected,
                                                                                       rel=1e-4)
    # Batch-norm scales and offsets, biases and fusion weights are not decayed (official).
    assert float(l2_regularization(others + kernels[:1], 4e-5)) == pytest.approx(
        4e-5 * float(np.sum(np.square(kernels[0].numpy()))) / 2, rel=1e-4)


# The boxes of the official iou_utils_test.py (yxyx).
OFFICIAL_PRED = [[4.0, 3.0, 7.0, 5.0], [5.0, 6.0, 10.0, 7.0]]
OFFICIAL_TARGET = [[3.0, 4.0, 6.0, 8.0], [14.0, 14.0, 15.0, 15.0]]


@pytest.mark.parametrize("loss_type, expected", [
    ("iou", [0.875, 1.0]),              # official iou_utils_test.py::test_iou
    ("ciou", [0.99931306, 1.6415315]),  # ::test_ciou
    ("diou", [0.9969512, 1.6243094]),   # ::test_diou
    ("giou", [1.075, 1.933333]),        # ::test_giou
])
def test_official_iou_loss_values(loss_type, expected):
    loss = 1.0 - iou_variant(tf.constant(OFFICIAL_PRED), tf.constant(OFFICIAL_TARGET), loss_type)
    np.testing.assert_allclose(loss.numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_official_ciou_gradient(compiled):
    """official iou_utils_test.py::test_ciou_grad: the sums of dL/dtarget and dL/dpred; the
    per-coordinate values are those of the official iou_utils.py run on the same boxes."""
    pred, target = tf.constant(OFFICIAL_PRED), tf.constant(OFFICIAL_TARGET)

    def gradients(pred, target):
        with tf.GradientTape() as tape:
            tape.watch([pred, target])
            loss = tf.reduce_sum(1.0 - iou_variant(pred, target, "ciou"))
        return tape.gradient(loss, [target, pred])

    d_target, d_pred = (tf.function(gradients) if compiled else gradients)(pred, target)
    assert float(tf.reduce_sum(d_target)) == pytest.approx(0.1476393, abs=1e-6)
    assert float(tf.reduce_sum(d_pred)) == pytest.approx(-0.14763935, abs=1e-6)
    np.testing.assert_allclose(d_target.numpy(), OFFICIAL_CIOU_D_TARGET, atol=1e-6)
    np.testing.assert_allclose(d_pred.numpy(), OFFICIAL_CIOU_D_PRED, atol=1e-6)


OFFICIAL_CIOU_D_TARGET = [[-0.1403225, 0.24708596, 0.04520506, -0.03900456],
                          [-0.07128273, 0.15415566, 0.07964633, -0.12784389]]
OFFICIAL_CIOU_D_PRED = [[0.0789376, -0.04241373, 0.01617984, -0.16566768],
                        [0.03031043, 0.01788712, -0.03867403, -0.0441989]]


@pytest.mark.any_backend
@pytest.mark.skipif(BACKEND != "jax", reason="test_official_ciou_gradient on TensorFlow")
def test_official_ciou_gradient_under_jax_jit():
    import jax

    def loss(pred, target):
        return keras.ops.sum(1.0 - iou_variant(pred, target, "ciou"))

    d_pred, d_target = jax.jit(jax.grad(loss, argnums=(0, 1)))(
        np.array(OFFICIAL_PRED, np.float32), np.array(OFFICIAL_TARGET, np.float32))
    np.testing.assert_allclose(d_target, OFFICIAL_CIOU_D_TARGET, atol=1e-6)
    np.testing.assert_allclose(d_pred, OFFICIAL_CIOU_D_PRED, atol=1e-6)


def test_segmentation_cross_entropy_sums_over_labelled_pixels_at_the_logits_size():
    # A 4x4 mask of 2x2 blocks (0, 1 / ignored, 1) against 2x2 logits of 2 classes.
    mask = np.kron(np.array([[0, 1], [255, 1]], np.uint8), np.ones((2, 2), np.uint8))[None]
    logits = np.array([[[[0.0, 0.0], [0.0, math.log(3.0)]],
                        [[50.0, -50.0], [2.0, 2.0]]]], np.float32)
    expected = (math.log(2.0) + math.log(4.0 / 3.0) + math.log(2.0)) / 3
    total, labelled = segmentation_cross_entropy(logits, mask, ignore_label=255)
    assert float(labelled) == 3.0
    assert float(total) / 3.0 == pytest.approx(expected, rel=1e-6)
    all_ignored = np.full_like(mask, 255)
    assert [float(x) for x in segmentation_cross_entropy(logits, all_ignored, 255)] == [0.0, 0.0]


# Levels 3 and 4 only: XLA compiles the IoU loss's gradient slowly (about 2 s a level here).
RANDOM_BATCH_CONFIG = ("image_size=64,num_classes=3,max_level=4,iou_loss_type=ciou,"
                       "positives_momentum=0.9")


def _random_batch():
    """Seeded outputs and labels of a 64-pixel d0 (levels 3, 4) with 3 classes, batch 2: class
    targets -1 (negative) to 2, box targets of negatives 0; box outputs of negatives 100, whose
    decoded boxes overflow float32: they must not make the gradient NaN. Segmentation logits
    11x11 of 4 classes against 52x52 masks with ignored (255) pixels (sampled as
    `tf.image.resize`; `keras.ops.image.resize` on JAX takes other rows and columns)."""
    rng = np.random.default_rng(0)
    class_outputs, box_outputs, labels = [], [], {}
    for level, (height, width) in enumerate(feature_sizes(64, 4)[3:], start=3):
        class_outputs.append(rng.normal(size=(2, height, width, 27)).astype(np.float32))
        box_outputs.append(rng.normal(0, 0.5, size=(2, height, width, 36)).astype(np.float32))
        classes = rng.integers(-1, 3, size=(2, height, width, 9)).astype(np.int32)
        boxes = rng.normal(0, 0.5, size=(2, height, width, 9, 4)).astype(np.float32)
        boxes[classes < 0] = 0.0
        box_outputs[-1][np.repeat(classes < 0, 4, axis=-1)] = 100.0
        labels[f"cls_targets_{level}"] = classes
        labels[f"box_targets_{level}"] = boxes.reshape(2, height, width, 36)
    logits = rng.normal(size=(2, 11, 11, 4)).astype(np.float32)
    masks = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=(2, 52, 52))
    return class_outputs, box_outputs, labels, logits, masks


# The TensorFlow implementation before the keras.ops port (commit be7e94e: tf.boolean_mask,
# tf.custom_gradient, tf.image.resize) on `_random_batch()`: the parts of two calls of one
# DetectionLoss (positives_momentum 0.9: normalizers 107.4, then 204.06), the sums and absolute
# sums per level of d det_loss / d box_outputs of the first call (computed with the negatives'
# outputs replaced by noise: the old code made the gradient NaN where they overflow; the
# negatives' gradients are 0), and segmentation_cross_entropy's (sum, labelled pixels).
TF_DETECTION_PARTS = [
    {"cls_loss": 10.405817031860352, "box_loss": 0.5086857080459595,
     "iou_loss": 2.5206873416900635, "det_loss": 38.36079025268555},
    {"cls_loss": 5.47674560546875, "box_loss": 0.26772934198379517,
     "iou_loss": 1.3266775608062744, "det_loss": 20.189889907836914},
]
TF_BOX_GRADIENT_SUMS = [-0.07542714476585388, 0.2167789340019226]
TF_BOX_GRADIENT_ABS_SUMS = [39.209476470947266, 9.470575332641602]
TF_SEGMENTATION = [327.5804138183594, 194.0]


def _loss_and_box_gradients(loss):
    """A function (class_outputs, box_outputs, labels, num_positives) -> the parts of `loss` and
    d det_loss / d box_outputs: under `jax.jit` as in a training step (the moving normalizer's
    update through a StatelessScope), eagerly on TensorFlow."""
    if BACKEND == "jax":
        import jax

        average = loss.normalizer.average

        def det_loss(box_outputs, average_value, *inputs):
            class_outputs, labels, num_positives = inputs
            with keras.StatelessScope(state_mapping=[(average, average_value)]) as scope:
                parts = loss(class_outputs, box_outputs, labels, num_positives)
            return parts["det_loss"], (parts, scope.get_current_value(average))

        compiled = jax.jit(jax.grad(det_loss, has_aux=True))

        def jax_step(class_outputs, box_outputs, labels, num_positives):
            gradients, (parts, new_average) = compiled(
                box_outputs, average.value, class_outputs, labels, num_positives)
            average.assign(new_average)
            return parts, gradients

        return jax_step

    def tensorflow_step(class_outputs, box_outputs, labels, num_positives):
        box_outputs = [tf.constant(boxes) for boxes in box_outputs]
        with tf.GradientTape() as tape:
            tape.watch(box_outputs)
            parts = loss(class_outputs, box_outputs, labels, num_positives)
        return parts, tape.gradient(parts["det_loss"], box_outputs)

    return tensorflow_step


@pytest.mark.any_backend
def test_losses_match_the_official_tensorflow_maths_and_compile():
    config = get_config("efficientdet-d0", RANDOM_BATCH_CONFIG)
    class_outputs, box_outputs, labels, logits, masks = _random_batch()
    num_positives = float(sum(np.sum(labels[f"cls_targets_{level}"] >= 0) for level in
                              range(3, 5)))
    step = _loss_and_box_gradients(DetectionLoss(config))
    for expected in TF_DETECTION_PARTS:
        parts, gradients = step(class_outputs, box_outputs, labels, num_positives)
        assert {name: float(value) for name, value in parts.items()} == pytest.approx(
            expected, rel=1e-6)
        if expected is TF_DETECTION_PARTS[0]:
            first_gradients = [keras.ops.convert_to_numpy(gradient) for gradient in gradients]
    assert all(np.isfinite(gradient).all() for gradient in first_gradients)
    np.testing.assert_allclose([np.sum(g) for g in first_gradients], TF_BOX_GRADIENT_SUMS,
                               rtol=1e-4)
    np.testing.assert_allclose([np.sum(np.abs(g)) for g in first_gradients],
                               TF_BOX_GRADIENT_ABS_SUMS, rtol=1e-5)
    segmentation = segmentation_cross_entropy
    if BACKEND == "jax":
        import jax

        segmentation = jax.jit(segmentation, static_argnums=2)
    np.testing.assert_allclose([float(x) for x in segmentation(logits, masks, 255)],
                               TF_SEGMENTATION, rtol=1e-6)
