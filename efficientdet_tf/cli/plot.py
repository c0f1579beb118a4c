"""`--mode=plot --model_dir=DIR`: DIR/curves.png, the training curves of a run (finished or not)
from its TensorBoard logs (see `diagnostics.training_curves`)."""

from __future__ import annotations

from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.diagnostics.training_curves import plot_training_curves


def run(flag_values) -> None:
    if not flag_values.model_dir:
        raise ConfigError("--mode=plot needs --model_dir (the directory of a training run).")
    with usage_errors():
        path = plot_training_curves(flag_values.model_dir)
    print(f"Training curves written to {path}")
