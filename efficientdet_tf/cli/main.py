"""The command line: `efficientdet --mode=MODE ...`, `python -m efficientdet_tf ...` and `main.py`.

TensorFlow is loaded with its C++ start-up lines hidden (see `quiet`).
"""

from __future__ import annotations

import os
import sys

from efficientdet_tf.cli.quiet import (
    hide_native_info_lines,
    native_stderr_silenced,
    probe_devices,
)

hide_native_info_lines()
with native_stderr_silenced():
    import tensorflow as tf

    tf.config.list_physical_devices()  # the device probe logs too

from absl import app, flags  # noqa: E402

from efficientdet_tf import backends  # noqa: E402
from efficientdet_tf.cli import train  # noqa: E402
from efficientdet_tf.cli.modes import MODES, TENSORFLOW_ONLY_MODES, TRAINING_MODES  # noqa: E402
from efficientdet_tf.errors import ConfigError, FaultError  # noqa: E402
from efficientdet_tf.output_files import WRITE_ERRORS, write_fault  # noqa: E402

USAGE_ERROR_STATUS = 2  # a flag, setting or input that cannot be used
FAULT_STATUS = 1  # a fault met while running: a failed write, a damaged file, a non-finite loss

flags.DEFINE_enum("mode", None, sorted(MODES), "What to run.")
flags.mark_flag_as_required("mode")


def _main(argv: list[str]) -> None:
    if len(argv) > 1:
        _exit_with_error(f"unexpected arguments: {' '.join(argv[1:])}", USAGE_ERROR_STATUS)
    mode = flags.FLAGS.mode
    try:
        if mode in TENSORFLOW_ONLY_MODES:
            backends.current().require_tensorflow(f"--mode={mode}", backends.PREDICTS_EVERYWHERE)
        if mode in TRAINING_MODES:
            backends.current().require_training(f"--mode={mode}")
            train.join_processes(flags.FLAGS)  # before JAX first looks at its devices
        with native_stderr_silenced():
            probe_devices()
        MODES[mode](flags.FLAGS)
    except (ConfigError, app.UsageError) as error:
        _exit_with_error(str(error), USAGE_ERROR_STATUS)
    except FaultError as error:
        _exit_with_error(str(error), FAULT_STATUS)
    except WRITE_ERRORS as error:
        fault = write_fault(error)
        if fault is None:
            raise
        _exit_with_error(f"A write failed: {fault}.", FAULT_STATUS)


def _exit_with_error(message: str, status: int) -> None:
    """One line (the message names the fix) instead of absl's page of flag help or a
    traceback."""
    program = os.path.basename(sys.argv[0])
    if program == "__main__.py":
        program = "python -m efficientdet_tf"
    print(f"{program}: error: {message}", file=sys.stderr)
    sys.exit(status)


def run_main() -> None:
    """Entry point of the `efficientdet` console script."""
    app.run(_main)
