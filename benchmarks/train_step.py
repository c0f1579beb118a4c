"""Training-step and forward-pass throughput of a model on this machine, on the Keras backend
of KERAS_BACKEND (TensorFlow, JAX or PyTorch).

    python benchmarks/train_step.py                   # EfficientDet-D0, 512x512, batch 8
    KERAS_BACKEND=jax python benchmarks/train_step.py
    KERAS_BACKEND=torch python benchmarks/train_step.py
    KERAS_BACKEND=jax python benchmarks/train_step.py --fit --image_size=64 \
        --hparams=num_classes=3,fpn_cell_repeats=1,box_class_repeats=1

One fixed batch (synthetic images, real anchor labels) is fed from memory to the training
function of `ObjectDetector.fit` (Keras's, around the official step), so the figure is the
network's alone: forward, loss, backward, clipping, SGD and the weight average (EMA on), as in
training. With --fit, the figure is that of `fit` itself with the callbacks of --mode=train
(what Keras and the callbacks do between steps included, the input pipeline running beside).
Figures are medians over steps after warm-up; the first step's time (building, tracing and
compiling included) and, on JAX, the XLA compilations of the first step and of the steps after
(none expected: one program for the whole run) come first. `train_images_per_second` and
`fit_steps_per_second` are the functions to reuse for other comparisons.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf.config import get_config
from efficientdet_tf.data.pipeline import build_dataset
from efficientdet_tf.object_detector import ObjectDetector
from efficientdet_tf.training.callbacks import StepSummaries, TrainingCheckpoints

# JAX's monitoring event for one XLA compilation (jax._src.dispatch.BACKEND_COMPILE_EVENT).
_JAX_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _fixed_batch(config, batch_size: int):
    dataset = build_dataset("synthetic:train", config, is_training=True, batch_size=batch_size)
    return next(iter(dataset))


def _median_rate(run_once, batch_size: int, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        run_once()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        run_once()
        seconds.append(time.perf_counter() - start)
    return batch_size / statistics.median(seconds)


@dataclasses.dataclass
class Compilations:
    """The XLA programs JAX compiled while counting (none are counted on other backends; a
    program found in JAX's persistent compilation cache is not compiled)."""

    count: int = 0
    seconds: float = 0.0


@contextlib.contextmanager
def counting_compilations():
    """Counts JAX's XLA compilations in the block."""
    compilations = Compilations()

    def listen(event: str, duration_secs: float, **_):
        if event == _JAX_COMPILE_EVENT:
            compilations.count += 1
            compilations.seconds += duration_secs

    if keras.backend.backend() != "jax":
        yield compilations
        return
    import jax

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield compilations
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@dataclasses.dataclass
class TrainingFigures:
    first_step_seconds: float  # building, tracing and compiling included
    first_step_compilations: Compilations
    images_per_second: float  # median over the steps after warm-up
    later_compilations: Compilations  # in the warm-up and timed steps: none expected


def training_figures(config, batch_size: int, warmup: int = 3, steps: int = 10):
    """The first training step's time and compilations, then the median training images per
    second (one step per measurement, EMA on) and the compilations of those steps."""
    detector = ObjectDetector(config)
    # One real step builds the optimizer and Keras's training function; collecting its input
    # pipeline stops that pipeline's threads, which would otherwise compete with the timing.
    with counting_compilations() as first_compilations:
        start = time.perf_counter()
        detector.fit("synthetic:train", epochs=1, batch_size=batch_size, steps_per_epoch=1,
                     verbose=0)
        first_step_seconds = time.perf_counter() - start
    gc.collect()
    with counting_compilations() as later_compilations:
        rate = _median_rate(_training_steps(detector, _fixed_batch(config, batch_size)),
                            batch_size, warmup, steps)
    return TrainingFigures(first_step_seconds, first_compilations, rate, later_compilations)


def train_images_per_second(config, batch_size: int, warmup: int = 3, steps: int = 10) -> float:
    """Median training images per second (one step per measurement, EMA on)."""
    return training_figures(config, batch_size, warmup, steps).images_per_second


def _training_steps(detector, batch):
    """A function running one step of `fit`'s training function on `batch`, from memory."""
    if keras.backend.backend() == "jax":  # Keras's stateless function: state in, state out
        # A tuple of lists, as fit passes it: another structure would compile another program.
        state = tuple([v.value for v in variables] for variables in (
            detector.trainable_variables, detector.non_trainable_variables,
            detector.optimizer.variables, detector.metrics_variables))
        batches = itertools.repeat(tf.nest.map_structure(np.asarray, batch))

        def run_once():
            nonlocal state
            logs, state = detector.train_function(state, batches)
            float(logs["loss"])

        return run_once
    if keras.backend.backend() == "torch":  # Keras's eager function of a list of batches
        batches = [tf.nest.map_structure(lambda t: keras.ops.convert_to_tensor(np.asarray(t)),
                                         batch)]
        return lambda: float(detector.train_function(batches)["loss"])
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    iterator = iter(detector.distribute_strategy.experimental_distribute_dataset(dataset))
    return lambda: detector.train_function(iterator)["loss"].numpy()


class BatchEndTimes(keras.callbacks.Callback):
    """The times of the batch ends of the latest epoch (reading nothing from the model)."""

    def on_epoch_begin(self, epoch, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        self.times.append(time.perf_counter())


def fit_steps_per_second(config, batch_size: int, steps: int = 10) -> float:
    """Median steps per second of `ObjectDetector.fit` with the callbacks of --mode=train
    (TrainingCheckpoints without save_checkpoints_steps, StepSummaries) on synthetic images:
    between the batch ends of a second epoch of `steps + 1` steps, after the first compiled the
    step (so neither the compilation nor the epoch ends' checkpoints count)."""
    detector = ObjectDetector(config)
    times = BatchEndTimes()
    with tempfile.TemporaryDirectory() as model_dir:
        detector.fit("synthetic:train", epochs=2, batch_size=batch_size,
                     steps_per_epoch=steps + 1, verbose=0, callbacks=[
                         TrainingCheckpoints(model_dir),
                         StepSummaries(os.path.join(model_dir, "train")), times])
    return 1 / statistics.median(np.diff(times.times))


def forward_images_per_second(config, batch_size: int, warmup: int = 3, steps: int = 10) -> float:
    """Median inference-mode forward-pass images per second of the network alone."""
    detector = ObjectDetector(config)
    images, _ = _fixed_batch(config, batch_size)
    if keras.backend.backend() != "tensorflow":
        images = np.asarray(images)
        forward = detector.network.predict_on_batch  # jax.jit; eager on PyTorch
    else:
        forward = tf.function(lambda x: detector.network(x, training=False))
    return _median_rate(lambda: [np.asarray(t) for t in tf.nest.flatten(forward(images))],
                        batch_size, warmup, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientdet-d0")
    parser.add_argument("--image_size", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before the timed")
    parser.add_argument("--hparams", default="", help="overrides, as --hparams of main.py")
    parser.add_argument("--fit", action="store_true",
                        help="steps/s of fit with the callbacks of --mode=train instead")
    args = parser.parse_args()
    config = get_config(args.model, f"image_size={args.image_size},{args.hparams}")
    if args.fit:
        rate = fit_steps_per_second(config, args.batch_size, steps=args.steps)
        print(f"{args.model} {args.image_size}x{args.image_size} batch {args.batch_size} on "
              f"{keras.backend.backend()}: fit with TrainingCheckpoints and StepSummaries, "
              f"{rate:.2f} steps/s")
        return
    train = training_figures(config, args.batch_size, args.warmup, args.steps)
    forward = forward_images_per_second(config, args.batch_size, args.warmup, args.steps)
    print(f"{args.model} {args.image_size}x{args.image_size} batch {args.batch_size} on "
          f"{keras.backend.backend()}")
    first = train.first_step_compilations
    print(f"first training step:    {train.first_step_seconds:6.1f} s "
          f"({_compiled(first)})")
    print(f"training step (EMA on): {train.images_per_second:6.2f} images/s "
          f"({_compiled(train.later_compilations)} in the {args.warmup + args.steps} steps after)")
    print(f"forward pass alone:     {forward:6.2f} images/s")


def _compiled(compilations: Compilations) -> str:
    if keras.backend.backend() != "jax":
        return "XLA compilations not counted off JAX"
    return f"{compilations.count} XLA compilations, {compilations.seconds:.1f} s"


if __name__ == "__main__":
    main()
