"""The `--mode` values of `main.py`, each a module of this package with a `run(flags)` function."""

from efficientdet_tf.cli import (
    benchmark,
    check_data,
    evaluate,
    export,
    infer,
    plot,
    summary,
    train,
    video,
)

# The modes that are TensorFlow programs (see backend_support), refused at once elsewhere.
TENSORFLOW_ONLY_MODES = ("export", "benchmark")
# The modes that train, refused at once where training does not run.
TRAINING_MODES = ("train", "train_and_eval")

MODES = {
    "summary": summary.run,
    "train": train.run,
    "train_and_eval": train.run,
    "eval": evaluate.run,
    "export": export.run,
    "infer": infer.run,
    "benchmark": benchmark.run,
    "check_data": check_data.run,
    "plot": plot.run,
    "video": video.run,
}
