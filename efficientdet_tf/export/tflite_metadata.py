"""TFLite metadata for exported detection files, written with tflite-support's metadata writer.

MediaPipe's ObjectDetector and the TFLite Task Library refuse a detection file without metadata.
It holds the model's name and description, the input image (RGB, its normalization), the label
file (one name a line for the 0-based output classes, from the config's label_map) and the four
output tensors. tflite-support is an optional dependency: `pip install --no-deps
tflite-support==0.4.4` (its protobuf<4 pin would break TensorFlow); the writers are imported from
`tensorflow_lite_support` because `tflite_support`'s own __init__ loads Task Library protos that
protobuf >= 4 rejects. Its compiled modules link the system library libusb-1.0.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from efficientdet_tf.label_map import class_name, class_names

LABELS_FILE_NAME = "labels.txt"
# Raw pixels go in unchanged: the graph normalizes them.
PIXELS_MEAN, PIXELS_STDDEV = [0.0], [1.0]


class MetadataWriterMissingError(ImportError):
    """tflite-support, whose metadata writer `export_tflite` uses, is not installed."""


def add_metadata(flatbuffer: bytes, config, input_layout: str) -> bytes:
    """`flatbuffer` (an `export.tflite` detection model) with its metadata and labels file."""
    writers, schema = _metadata_writers()
    if input_layout == "pixels":
        mean, stddev = PIXELS_MEAN, PIXELS_STDDEV
    else:
        mean, stddev = list(config.mean_rgb), list(config.stddev_rgb)
    with tempfile.TemporaryDirectory() as directory:
        labels = Path(directory) / LABELS_FILE_NAME
        labels.write_text("".join(f"{name}\n" for name in output_class_names(config)))
        writer = writers.object_detector.MetadataWriter.create_from_metadata_info(
            flatbuffer,
            general_md=writers.metadata_info.GeneralMd(
                name=config.name, description=_description(config, input_layout)),
            input_md=writers.metadata_info.InputImageTensorMd(
                name="image",
                description=f"RGB image of {config.image_size[0]}x{config.image_size[1]}.",
                norm_mean=mean,
                norm_std=stddev,
                color_space_type=schema.ColorSpaceType.RGB,
                tensor_type=writers.writer_utils.get_input_tensor_types(flatbuffer)[0],
            ),
            output_category_md=writers.metadata_info.CategoryTensorMd(
                name="category",
                description="The classes of the detected boxes (0-based).",
                label_files=[writers.metadata_info.LabelFileMd(file_path=str(labels))],
            ),
        )
        return writer.populate()


def output_class_names(config) -> list[str]:
    """The labels file's lines: the name of each 0-based output class (of class id + 1)."""
    names = class_names(config)
    return [class_name(names, class_id) for class_id in range(1, config.num_classes + 1)]


def _description(config, input_layout: str) -> str:
    boxes = "boxes (normalized ymin, xmin, ymax, xmax)"
    if input_layout == "pixels":
        takes = "raw uint8 RGB pixels, normalized in the model"
        gives = f"{boxes}, 0-based classes, scores and the number of detections"
    else:
        takes = "the normalized image (official automl layout)"
        gives = f"the number of detections, scores, 0-based classes and {boxes}"
    return (f"EfficientDet object detector ({config.name}, {config.num_classes} classes); takes "
            f"{takes}; gives {gives}.")


def _metadata_writers():
    """(tflite-support's metadata_writers, its metadata schema), or an error naming the fix."""
    try:
        from tensorflow_lite_support.metadata import metadata_schema_py_generated  # noqa: PLC0415
        from tensorflow_lite_support.metadata.python import metadata_writers  # noqa: PLC0415
        from tensorflow_lite_support.metadata.python.metadata_writers import (  # noqa: PLC0415, F401
            metadata_info,
            object_detector,
            writer_utils,
        )
    except ImportError as error:
        raise MetadataWriterMissingError(
            f"Writing TFLite metadata needs tflite-support, which failed to import ({error}). "
            "Install it with `pip install --no-deps tflite-support==0.4.4` (its protobuf pin "
            "would break TensorFlow) and the system library it links, libusb-1.0 (Debian: "
            "`apt-get install libusb-1.0-0`); or export with metadata=False."
        ) from error
    return metadata_writers, metadata_schema_py_generated
