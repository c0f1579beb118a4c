"""`--mode=summary`: the layer table, the parameter counts and the FLOPs."""

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.cli.quiet import native_stderr_silenced
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import load_weights
from efficientdet_tf.model.summary import model_cost


def run(flag_values) -> None:
    config = config_from_flags(flag_values)
    model = build_model(config)
    if flag_values.ckpt:
        with usage_errors():
            load_weights(model, flag_values.ckpt)
    model.summary(line_length=110)
    height, width = config.image_size
    print(f"Model {config.name} at {height}x{width}, {config.num_classes} classes")
    with native_stderr_silenced():  # grappler's info lines
        cost = model_cost(model)
    print(cost.describe())
