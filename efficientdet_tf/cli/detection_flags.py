"""Flags shared by the detection modes (eval, export, infer, benchmark); their error handling."""

from __future__ import annotations

import contextlib

from absl import app, flags

from efficientdet_tf.errors import ConfigError
from efficientdet_tf.inference.detector import ImageDetector
from efficientdet_tf.inference.loading import open_detector, open_exported
from efficientdet_tf.inference.postprocess import POSTPROCESS_MODES
from efficientdet_tf.inference.runtime_detector import INFERENCE_PRECISIONS, MissingRuntimeError

flags.DEFINE_enum("postprocess_mode", "global", POSTPROCESS_MODES,
                  "NMS of the detections: global (one NMS, classes ignored), per_class, combined.")
flags.DEFINE_enum("inference_precision", "f32", INFERENCE_PRECISIONS,
                  "eval, infer, video: what an OpenVINO IR (--saved_model_dir=.../model.xml) "
                  "computes in on the CPU: f32, or bf16 where the CPU has it (AVX-512 BF16, AMX; "
                  "float32 after a warning elsewhere).")
flags.DEFINE_string("saved_model_dir", None,
                    "export: where the SavedModel (and TFLite, ONNX, OpenVINO files) go. eval, "
                    "infer: a SavedModel directory, or a .tflite, .onnx or OpenVINO .xml file, to "
                    "run instead of --ckpt.")


def flagged_detector(flag_values, config, mode: str) -> ImageDetector:
    """The runner of --ckpt (`open_detector`) or of --saved_model_dir (`open_exported`, which
    says when the path is not an exported file), exactly one of which `mode` (e.g. '--mode=eval')
    needs."""
    if bool(flag_values.ckpt) == bool(flag_values.saved_model_dir):
        raise ConfigError(f"{mode} needs exactly one of --ckpt (a checkpoint) or "
                          "--saved_model_dir (a SavedModel directory, or a .tflite, .onnx or "
                          "OpenVINO .xml file).")
    with usage_errors():
        if flag_values.saved_model_dir:
            return open_exported(flag_values.saved_model_dir, config,
                                 flag_values.inference_precision)
        return open_detector(flag_values.ckpt, config, flag_values.postprocess_mode,
                             flag_values.inference_precision)


@contextlib.contextmanager
def usage_errors():
    """Reports a missing file, a bad value or a missing runtime as a usage error: its message, no
    traceback."""
    try:
        yield
    except (FileNotFoundError, ValueError, MissingRuntimeError) as error:
        raise app.UsageError(str(error)) from None
