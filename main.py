"""EfficientDet command line: `python main.py --mode=MODE --model_name=NAME [--hparams=...]`."""

from absl import app, flags

from efficientdet_tf.cli.modes import MODES
from efficientdet_tf.config import ConfigError

flags.DEFINE_enum("mode", None, sorted(MODES), "What to run.")
flags.mark_flag_as_required("mode")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    try:
        MODES[flags.FLAGS.mode](flags.FLAGS)
    except ConfigError as error:
        raise app.UsageError(str(error)) from None


if __name__ == "__main__":
    app.run(main)
