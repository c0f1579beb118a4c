"""The `--mode` values of `main.py`, each a module of this package with a `run(flags)` function."""

from efficientdet_tf.cli import summary

MODES = {
    "summary": summary.run,
}
