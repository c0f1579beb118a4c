"""Flags shared by the detection modes (eval, export, infer, benchmark); their error handling."""

from __future__ import annotations

import contextlib

from absl import app, flags

from efficientdet_tf.inference.postprocess import POSTPROCESS_MODES
from efficientdet_tf.inference.runtime_detector import MissingRuntimeError

flags.DEFINE_enum("postprocess_mode", "global", POSTPROCESS_MODES,
                  "NMS of the detections: global (one NMS, classes ignored), per_class, combined.")
flags.DEFINE_string("saved_model_dir", None,
                    "export: where the SavedModel (and TFLite, ONNX, OpenVINO files) go. eval, "
                    "infer: a SavedModel directory, or a .tflite, .onnx or OpenVINO .xml file, to "
                    "run instead of --ckpt.")


@contextlib.contextmanager
def usage_errors():
    """Reports a missing file, a bad value or a missing runtime as a usage error: its message, no
    traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, MissingRuntimeError) as error:
        raise app.UsageError(str(error)) from None
