"""Hiding TensorFlow's C++ log lines on the command line.

TensorFlow's C++ code (oneDNN and CUDA probing at start-up, grappler when FLOPs are counted) writes
its info lines straight to the process's stderr, whatever TF_CPP_MIN_LOG_LEVEL says in current
releases. The command line runs those parts with file descriptor 2 pointed at /dev/null;
`TF_CPP_MIN_LOG_LEVEL=0` in the environment shows them again.
"""

from __future__ import annotations

import contextlib
import os
import sys


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
