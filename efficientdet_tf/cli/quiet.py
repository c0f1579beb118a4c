"""Hiding TensorFlow's C++ log lines on the command line.

TensorFlow logs from C++ along two paths. Its own logging (tf.data's generator_dataset_op.cc and
dataset.cc, grappler's devices.cc when a graph is optimized) honours TF_CPP_MIN_LOG_LEVEL, which
it reads once, at its first line, during the import: the command line sets it
(`hide_native_info_lines`) before importing TensorFlow. The absl logging of its bundled libraries
(oneDNN and CUDA probing at start-up, grappler when FLOPs are counted) writes straight to the
process's stderr whatever that level says, and
cuda_platform.cc's error where CUDA is absent, an error that level still shows, comes at the first
device probe: the command line runs those parts with file descriptor 2 pointed at /dev/null
(`native_stderr_silenced`). `TF_CPP_MIN_LOG_LEVEL=0` in the environment shows both.
"""

from __future__ import annotations

import contextlib
import os
import sys

# TensorFlow's C++ info and warning lines hidden; its errors still shown.
QUIET_NATIVE_LOG_LEVEL = "2"


def hide_native_info_lines() -> None:
    """Sets TF_CPP_MIN_LOG_LEVEL (unless set): call before TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_NATIVE_LOG_LEVEL)


def probe_devices() -> None:
    """The Keras backend's first look for its devices (`Backend.probe_devices`: JAX's, whose notes
    on absent CUDA and TPU, from C++ and an info line from Python, the command line hides like
    TensorFlow's)."""
    from efficientdet_tf import backends

    backends.current().probe_devices()


@contextlib.contextmanager
def native_stderr_silenced():
    """Runs the block with the process's stderr (fd 2) discarded, unless TF_CPP_MIN_LOG_LEVEL=0."""
    if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
