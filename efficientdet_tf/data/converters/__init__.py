"""Converters from COCO JSON and Pascal VOC to the official TFRecord layout (`python -m
efficientdet_tf.data.converters.create_coco_tfrecord`, `...create_pascal_tfrecord`)."""
