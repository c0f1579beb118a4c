"""Fitting an `ObjectDetector`: Keras's own `fit` loop around the official step, resumable.

`fit` makes the official optimizer for the run (its schedule spans the epochs given), resumes
from a `TrainingCheckpoints` callback's model_dir (mid-epoch included: the interrupted epoch is
finished first, then the rest, and the two Keras histories are merged) or starts from the
pretrained checkpoint, and runs the callbacks in the order that keeps saved weights good. The
command line trains through the same function (`ObjectDetector.fit`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

import keras

from efficientdet_tf import backends
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec, with_class_names_of
from efficientdet_tf.data.sources.base import AnnotatedImagesSource, Source
from efficientdet_tf.errors import ConfigError
from efficientdet_tf.evaluation.validation import ValidationMetrics
from efficientdet_tf.model.checkpoint import load_training_start
from efficientdet_tf.training.callbacks import NonFiniteLossGuard, TrainingCheckpoints
from efficientdet_tf.training.step import make_optimizer


class TrainingOptions(NamedTuple):
    """What `ObjectDetector.compile` chose for the next `fit` (see there)."""

    optimizer: keras.optimizers.Optimizer | None = None
    steps_per_execution: int = 1
    jit_compile: bool | None = None
    run_eagerly: bool = False


class TrainingData(NamedTuple):
    """The sources of a run and the config that records the training data's class names."""

    source: Source
    validation: Source | None
    config: object


def training_data(x, validation_data, config) -> TrainingData:
    """The training and validation sources of dataset specs (or sources, or datasets), and the
    config with the training data's class names as its label_map (unless it has one), so that
    the validation data gets the same class ids and the saved config records them."""
    source = source_from_spec(x, config)
    _require_objects(source, x, config)
    config = with_class_names_of(source, config)
    validation = None if validation_data is None else source_from_spec(validation_data, config)
    return TrainingData(source, validation, config)


def _require_objects(source, spec, config) -> None:
    """Refuses detection training data whose annotations hold no object at all (an image_info
    JSON of unlabeled images, say), which would train the heads on background only."""
    if ("object_detection" in config.heads and isinstance(source, AnnotatedImagesSource)
            and source.mask_dir is None and source.max_class_id is None):
        name = spec if isinstance(spec, (str, os.PathLike)) else type(source).__name__
        raise ConfigError(f"The training data {name} holds no labeled objects: nothing to learn "
                          "from. Give annotated data (its detections can still be written with "
                          "--mode=eval --testdev_dir).")


def epoch_steps(num_examples: int, batch_size: int) -> int:
    """Whole batches in an epoch of `num_examples` images."""
    if num_examples < batch_size:
        raise ConfigError(f"batch_size={batch_size} (--batch_size) exceeds the {num_examples} "
                          "images of an epoch.")
    return num_examples // batch_size


def fit(detector, data: TrainingData, *, epochs: int, batch_size: int, steps_per_epoch: int,
        validation_freq: int, validation_batch_size: int, validation_options: dict,
        callbacks: list, verbose, seed: int | None) -> keras.callbacks.History:
    """`ObjectDetector.fit` (see there) on `data`, the arguments resolved."""
    backend = backends.current()
    replicas = backend.num_replicas(detector.training_distribution)
    if batch_size % replicas:
        raise ConfigError(f"The global batch size {batch_size} does not split evenly over "
                          f"{replicas} replicas; use a multiple of {replicas}.")
    _compile_for_run(detector, batch_size, steps_per_epoch, epochs)
    callbacks = list(callbacks)
    start_step = _restore_or_start(detector, callbacks)
    if data.validation is not None:
        callbacks.append(ValidationMetrics(
            data.validation, every=validation_freq, last_epoch=epochs,
            batch_size=validation_batch_size, **validation_options))
    callbacks = _in_running_order(callbacks)
    dataset = backend.distributed_dataset(
        detector.training_distribution,
        lambda batch, input_context: build_dataset(
            data.source, detector.config, is_training=True, batch_size=batch,
            input_context=input_context, seed=seed),
        batch_size)
    epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
    histories = []
    with backend.distribution_scope(detector.training_distribution):
        if done_in_epoch:  # a run resumed mid-epoch first finishes that epoch
            histories.append(keras.Model.fit(
                detector, dataset, epochs=epoch + 1, initial_epoch=epoch, callbacks=callbacks,
                shuffle=False, steps_per_epoch=steps_per_epoch - done_in_epoch, verbose=verbose))
            epoch += 1
        if epoch < epochs and not detector.stop_training:
            histories.append(keras.Model.fit(
                detector, dataset, epochs=epochs, initial_epoch=epoch, callbacks=callbacks,
                shuffle=False, steps_per_epoch=steps_per_epoch, verbose=verbose))
    detector.weight_average.copy_to_variables()
    return _merged(histories) if histories else keras.callbacks.History()  # run complete


def _compile_for_run(detector, batch_size: int, steps_per_epoch: int, epochs: int) -> None:
    """Keras's `compile` with the run's optimizer (the official one unless one was chosen) and
    `steps_per_execution` lowered to a divisor of the epoch's steps."""
    options = detector.training_options
    backend = backends.current()
    jit_compile = options.jit_compile
    if jit_compile is None:
        jit_compile = backend.jit_compiles_training
    with backend.distribution_scope(detector.training_distribution):
        optimizer = options.optimizer or make_optimizer(
            detector.config, batch_size, steps_per_epoch, epochs,
            dtype_policy=detector.network.dtype_policy)
        keras.Model.compile(
            detector, optimizer=optimizer, jit_compile=jit_compile,
            steps_per_execution=_largest_divisor(steps_per_epoch, options.steps_per_execution),
            run_eagerly=options.run_eagerly)
        if not optimizer.built:
            optimizer.build(detector.training_step.trainable)


def _restore_or_start(detector, callbacks: list) -> int:
    """Resumes from a `TrainingCheckpoints` callback's model_dir, else starts training from the
    pretrained checkpoint or the current weights; returns the step reached."""
    checkpoints = [c for c in callbacks if isinstance(c, TrainingCheckpoints)]
    if len(checkpoints) > 1:
        raise ValueError(f"fit takes one TrainingCheckpoints callback, got {len(checkpoints)}.")
    step = checkpoints[0].restore(detector) if checkpoints else None
    if step is not None:
        return step
    if detector.training_start:
        checkpoint, only_scope = detector.training_start
        load_training_start(detector.network, detector.weight_average, checkpoint,
                            skip_mismatch=detector.config.skip_mismatch, only_scope=only_scope)
        detector.start_training_from(None)  # done: a second fit goes on from here
    else:
        detector.weight_average.reset()
    return int(keras.ops.convert_to_numpy(detector.optimizer.iterations))


def _largest_divisor(number: int, at_most: int) -> int:
    return max(d for d in range(1, min(number, at_most) + 1) if number % d == 0)


def _in_running_order(callbacks: list) -> list:
    """The NaN guard first (nothing may save broken weights), then the checkpoints (an epoch is
    saved before it is validated), then validation (its metrics reach the user's callbacks)."""
    def rank(callback):
        return (0 if isinstance(callback, TrainingCheckpoints)
                else 1 if isinstance(callback, ValidationMetrics) else 2)

    return [NonFiniteLossGuard(), *sorted(callbacks, key=rank)]


def _merged(histories: list) -> keras.callbacks.History:
    """One History of the fit calls of a run resumed mid-epoch."""
    merged = histories[-1]
    for earlier in reversed(histories[:-1]):
        merged.epoch = earlier.epoch + merged.epoch
        for key, values in earlier.history.items():
            merged.history[key] = values + merged.history.get(key, [])
    return merged
