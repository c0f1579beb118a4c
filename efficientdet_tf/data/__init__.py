"""Input data of EfficientDet: dataset sources, converters, augmentation and anchor labels.

    from efficientdet_tf.data import build_dataset
    train = build_dataset("synthetic:train", config, is_training=True, batch_size=8)
    val = build_dataset("/data/val-*.tfrecord", config, is_training=False, batch_size=8)
    mine = build_dataset("voc:labels:images:val:10%", config, is_training=False, batch_size=8)
    masks = build_dataset("masks:SegmentationClass:JPEGImages", config, is_training=True,
                          batch_size=8)  # with config.heads including 'segmentation'

See `pipeline` for dataset specs and the (images, labels) batch format. Converters:
`python -m efficientdet_tf.data.converters.create_coco_tfrecord` and
`python -m efficientdet_tf.data.converters.create_pascal_tfrecord`.
"""

from efficientdet_tf.data.labeler import AnchorLabeler
from efficientdet_tf.data.pipeline import ExampleParser, build_dataset, source_from_spec
from efficientdet_tf.data.sources.base import Source, TFRecordSource
from efficientdet_tf.data.sources.coco import CocoJsonSource
from efficientdet_tf.data.sources.csv_annotations import CsvSource
from efficientdet_tf.data.sources.mask_folder import MaskFolderSource
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.data.sources.voc_folder import VocFolderSource

__all__ = [
    "AnchorLabeler",
    "CocoJsonSource",
    "CsvSource",
    "ExampleParser",
    "MaskFolderSource",
    "Source",
    "SyntheticShapes",
    "TFRecordSource",
    "VocFolderSource",
    "build_dataset",
    "source_from_spec",
]
