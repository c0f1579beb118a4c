"""TensorFlow's fused NMS kernels, the TensorFlow backend's `fused_nms()`: what exported
SavedModels and TFLite files contain. Each selection takes `inference.nms`'s arguments (`settings`
an `nms.NmsSettings`) and gives (boxes, scores, classes, counts) as `nms.Selection` holds them."""

from __future__ import annotations

import tensorflow as tf


def select_by_score(boxes, scores, labels, settings, per_class: bool, num_classes: int):
    """`nms.select_by_score` with `NonMaxSuppressionV5`, image by image."""

    def one_image(candidates):
        boxes, scores, labels = candidates
        if per_class:
            indices, kept_scores, count = _per_class_nms(boxes, scores, labels, settings,
                                                         num_classes)
        else:
            indices, kept_scores, count = _nms(boxes, scores, settings)
        return tf.gather(boxes, indices), kept_scores, tf.gather(labels, indices), count

    size = settings.max_output_size
    kept = tf.map_fn(
        one_image,
        (boxes, scores, tf.cast(labels, tf.int32)),
        fn_output_signature=(tf.TensorSpec([size, 4], tf.float32),
                             tf.TensorSpec([size], tf.float32),
                             tf.TensorSpec([size], tf.int32),
                             tf.TensorSpec([], tf.int32)),
    )
    return _zero_padding(*kept)


def select_per_class_pairs(boxes, scores, settings):
    """`nms.select_per_class_pairs` with `tf.image.combined_non_max_suppression`."""
    boxes, scores, classes, counts = tf.image.combined_non_max_suppression(
        boxes[:, :, tf.newaxis, :],
        scores,
        max_output_size_per_class=settings.max_output_size,
        max_total_size=settings.max_output_size,
        iou_threshold=settings.iou_threshold,
        score_threshold=settings.score_threshold,
        clip_boxes=False,
    )
    return _zero_padding(boxes, scores, tf.cast(classes, tf.int32), counts)


def _nms(boxes, scores, settings):
    """Indices, scores and count of the kept boxes of one image, padded to max_output_size."""
    # NonMaxSuppressionV5's sigma is twice the paper's (tensorflow/tensorflow#40253).
    return tf.raw_ops.NonMaxSuppressionV5(
        boxes=boxes,
        scores=scores,
        max_output_size=settings.max_output_size,
        iou_threshold=settings.iou_threshold,
        score_threshold=settings.score_threshold,
        soft_nms_sigma=settings.soft_nms_sigma / 2,
        pad_to_max_output_size=True,
    )


def _per_class_nms(boxes, scores, classes, settings, num_classes: int):
    """NMS within each class, then the max_output_size best of all (ties: lower class first)."""
    size = settings.max_output_size
    slots = tf.range(size)

    def class_nms(class_id):
        # Other classes' candidates get -inf, which fails every score threshold.
        class_scores = tf.where(classes == class_id, scores, float("-inf"))
        indices, kept_scores, count = _nms(boxes, class_scores, settings)
        return indices, tf.where(slots < count, kept_scores, float("-inf")), count

    indices, kept_scores, counts = tf.map_fn(
        class_nms, tf.range(num_classes), fn_output_signature=(tf.int32, tf.float32, tf.int32))
    best_scores, best = tf.math.top_k(tf.reshape(kept_scores, [-1]), k=size)
    return tf.gather(tf.reshape(indices, [-1]), best), best_scores, tf.minimum(
        size, tf.reduce_sum(counts))


def _zero_padding(boxes, scores, classes, counts) -> tuple:
    """(boxes, scores, classes, counts) with zeros in the rows at and after each image's count."""
    kept = tf.range(tf.shape(scores)[1]) < counts[:, tf.newaxis]
    return (tf.where(kept[..., tf.newaxis], boxes, 0.0), tf.where(kept, scores, 0.0),
            tf.where(kept, classes, 0), tf.cast(counts, tf.int32))
