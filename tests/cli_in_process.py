"""The command line run in the test's process: cheaper than a subprocess (TensorFlow is loaded
once), with the same flag parsing, error handling and exit status as `efficientdet`."""

from __future__ import annotations

from absl import app, flags

from efficientdet_tf.cli import main


def run_cli(*args: str) -> int:
    """Runs `efficientdet *args` as the console script does; its exit status. Pytest's capsys or
    capfd captures what it prints; the flags are reset afterwards."""
    try:
        app.run(main._main, argv=["efficientdet", *args])
    except SystemExit as exit_:
        return exit_.code or 0
    finally:
        flags.FLAGS.unparse_flags()
    return 0
