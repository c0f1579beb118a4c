"""`ObjectDetector`: EfficientDet as one Keras model that fine-tunes, evaluates, predicts, saves
and exports.

    detector = ObjectDetector.from_pretrained("efficientdet-lite0", num_classes=3)
    detector.fit("voc:annotations:images:train:10%", epochs=20, batch_size=16,
                 validation_data="voc:annotations:images:val:10%")
    detector.evaluate("voc:annotations:images:val:10%")   # {'AP': ..., 'AP50': ..., ...}
    detector.predict([image])                              # {'detection_boxes': ..., ...}
    detector.export("exported")                            # SavedModel and TFLite files
    detector.save("detector.keras")                        # keras.saving.load_model reads it

`fit` is Keras's own loop around the official training step (`training.step.TrainingStep`), with
the official optimizer and schedule over the epochs given to `fit`, under the strategy the
detector was built in. As with Keras's `use_ema` optimizers, the averaged weights replace the
trained ones when `fit` ends; during `fit`, validation uses them. The command line trains
through the same `fit`, with the callbacks of `training.callbacks` for its model_dir.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf import backends
from efficientdet_tf.config import Config, ConfigError, get_config, validate
from efficientdet_tf.data.pipeline import build_dataset, source_from_spec, with_class_names_of
from efficientdet_tf.evaluation.model_evaluation import DEFAULT_BATCH_SIZE, evaluate
from efficientdet_tf.evaluation.validation import ValidationMetrics
from efficientdet_tf.export.onnx import ONNX_FILE_NAME, export_onnx
from efficientdet_tf.export.openvino import OPENVINO_DIR_NAME, OPENVINO_FILE_NAME, export_openvino
from efficientdet_tf.export.saved_model import export_saved_model
from efficientdet_tf.export.tflite import DEFAULT_CALIBRATION_STEPS, export_tflite
from efficientdet_tf.inference.detector import CompiledDetector, Detector
from efficientdet_tf.model.builder import build_model
from efficientdet_tf.model.checkpoint import load_training_start, load_weights
from efficientdet_tf.model.weight_average import WeightAverage
from efficientdet_tf.training.callbacks import (
    NonFiniteLossGuard,
    TrainingCheckpoints,
    input_image_summary,
)
from efficientdet_tf.training.distribution import (
    cross_replica_batch_norm,
    current_distribution,
    distribution_scope,
    num_replicas,
)
from efficientdet_tf.training.step import TrainingStep, make_optimizer, trainable_variables
from efficientdet_tf.training.tensorflow_step import tensorflow_train_step

# What `export` writes by default; "onnx" and "openvino" need the deploy extra.
DEFAULT_EXPORT_FORMATS = ("saved_model", "tflite_float32", "tflite_float16", "tflite_int8")
EXPORT_FORMATS = (*DEFAULT_EXPORT_FORMATS, "onnx", "openvino")


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ObjectDetector(keras.Model):
    """EfficientDet with its official training recipe, evaluation, pre- and post-processing.

    Args:
      model_name: an official model name (`efficientdet_tf.available_models()`), a saved config
        YAML, or a `Config`.
      hparams: overrides, as `get_config` takes them: 'key=value,...', a dict or a YAML path.

    Build it inside `strategy.scope()` (on JAX, a `keras.distribution.DataParallel`'s
    `scope()`) to train on several devices. Calling it on normalized
    images gives the network's raw outputs, as `build_model`'s network.
    """

    def __init__(self, model_name: str | os.PathLike | Config = "efficientdet-d0",
                 hparams: str | dict | os.PathLike | None = None, **kwargs):
        config = (model_name.override(hparams) if isinstance(model_name, Config)
                  else get_config(model_name, hparams))
        super().__init__(name=kwargs.pop("name", config.name), **kwargs)
        self.config = config
        # The devices it trains on: a tf.distribute strategy, or on JAX a Keras distribution.
        self.training_distribution = current_distribution()
        self.network = build_model(
            config, synchronized_batch_norm=cross_replica_batch_norm(self.training_distribution))
        trainable = trainable_variables(self.network, config.var_freeze_expr)
        self.weight_average = WeightAverage(trainable, config.moving_average_decay)
        self.training_step = TrainingStep(config, self.network, trainable, self.weight_average)
        # Tracked, so that JAX's stateless step carries it with the model's state.
        self.loss_state = self.training_step.state_variables
        self._training_start = None
        self.compile()  # the defaults: the official optimizer, made by `fit`
        self._representative_data = None
        self._compiled_detector = None
        self.built = True

    @classmethod
    def from_pretrained(cls, model_name: str = "efficientdet-d0", num_classes: int | None = None,
                        hparams=None, checkpoint: str | os.PathLike | None = None):
        """A detector with the weights of `checkpoint`: by default the official COCO weights of
        `model_name`, downloaded once (see `model.official_weights`).

        With another `num_classes` the class prediction layer does not fit and keeps its new
        initial values (a warning names it); every other weight is the checkpoint's. The loaded
        weights are its averaged ones (those of the official evaluation), and `fit` starts from
        its plain ones with its averages seeding the weight average, as the official trainer.
        """
        config = get_config(model_name, hparams)
        if num_classes is not None:
            config = config.override({"num_classes": num_classes})
        detector = cls(config)
        detector.load_pretrained(checkpoint or model_name)
        return detector

    def load_pretrained(self, checkpoint: str | os.PathLike, only_scope: str | None = None):
        """Loads `checkpoint` (a path or an official name) as `from_pretrained` does; returns the
        names of the variables that did not fit (a warning names them too). `only_scope` (e.g.
        the backbone's name) loads only the variables under it, such as an EfficientNet
        classification checkpoint."""
        skipped = load_weights(self.network, checkpoint, skip_mismatch=self.config.skip_mismatch,
                               only_scope=only_scope)
        self.start_training_from(checkpoint, only_scope)
        return skipped

    def start_training_from(self, checkpoint: str | os.PathLike, only_scope: str | None = None):
        """`fit` will start from `checkpoint`'s plain weights, its averages seeding the weight
        average (as the official trainers), unless it resumes a run of its
        `TrainingCheckpoints`. Nothing is loaded now (`load_pretrained` also loads it now)."""
        self._training_start = (checkpoint, only_scope)

    def call(self, images, training=False):
        return self.network(images, training=training)

    # --- training --------------------------------------------------------------------------------

    def compile(self, optimizer=None, *, steps_per_execution: int = 1, jit_compile=None,
                run_eagerly=False):
        """Keras's `compile`. Without an optimizer `fit` makes the official one (SGD with
        momentum, warm-up then the configured decay over the epochs given to `fit`, loss scaling
        under mixed_float16). The loss is the recipe's; `steps_per_execution` steps run per
        compiled call (lowered to a divisor of the epoch's steps). `jit_compile`: whether XLA
        compiles the step; by default not on TensorFlow (XLA is slower on CPUs for this
        depthwise-heavy network) and always on JAX. `run_eagerly` runs the step op by op, as
        Python (Keras's debugging mode; one device only): no tracing, so a fit of a few steps
        starts at once, but each step is slower."""
        if jit_compile is None:
            jit_compile = keras.backend.backend() == "jax"
        self._chosen_optimizer = optimizer
        self._compile_options = {"steps_per_execution": steps_per_execution,
                                 "jit_compile": jit_compile, "run_eagerly": run_eagerly}

    def train_step(self, *state_and_data):
        """Keras's hook: `train_step(data)` on TensorFlow and PyTorch, `train_step(state, data)`
        in JAX's stateless form; all run `self.training_step`'s recipe."""
        backend = keras.backend.backend()
        if backend == "jax":
            from efficientdet_tf.training.jax_step import jax_train_step  # JAX is optional

            return jax_train_step(self, *state_and_data)
        images, labels = state_and_data[0]
        if backend == "torch":
            from efficientdet_tf.training.torch_step import torch_train_step  # PyTorch too

            return {**torch_train_step(self.training_step, images, labels, self.optimizer),
                    "learning_rate": self.optimizer.learning_rate}
        input_image_summary(images, self.config, self.optimizer.iterations)
        logs = {**tensorflow_train_step(self.training_step, images, labels, self.optimizer),
                "learning_rate": self.optimizer.learning_rate}
        # The logs are sums over replicas, alike on every one, which Keras then averages over
        # replicas. Under MultiWorkerMirroredStrategy it averages along axis 0, which fails on
        # scalars: hence shape [1] here, and scalars again in `make_train_function`.
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}

    def make_train_function(self, force=False):
        if keras.backend.backend() != "tensorflow":
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        super().make_train_function(force=True)
        run_steps = self.train_function
        self.train_function = lambda iterator: {
            name: tf.reshape(value, []) for name, value in run_steps(iterator).items()}
        return self.train_function

    def fit(self, x, *, epochs: int = 1, batch_size: int = 64, steps_per_epoch=None,
            validation_data=None, validation_freq: int = 1, validation_batch_size=None,
            validation_options: dict | None = None, callbacks=None, verbose="auto",
            seed: int | None = None):
        """Trains on `x` with the official recipe; returns Keras's `History`.

        Args:
          x: a dataset spec ('synthetic:train', 'voc:<xml_dir>:<image_dir>', a TFRecord glob,
            see `data.pipeline`), a `data.sources.base.Source`, or a `tf.data.Dataset` of unbatched
            `(uint8 image [H, W, 3], {'boxes': [N, 4] ymin, xmin, ymax, xmax in pixels,
            'classes': [N]})`. Augmentation and anchor labelling are the recipe's.
          batch_size: the global batch, split over the distribution's devices.
          steps_per_epoch: default: the images of `x` divided by `batch_size`.
          validation_data: data in the same forms; its metrics of the averaged weights (COCO,
            and mIoU with the segmentation head) go into the logs as `val_AP`, `val_AP50`, ...,
            `val_mIoU`, every `validation_freq` epochs and after the last one.
          validation_options: more options of the validation's `evaluate`: `eval_samples`,
            `val_json_file`, `summary_writer` (a log directory for TensorBoard scalars).
          callbacks: Keras callbacks; with a `training.callbacks.TrainingCheckpoints`, the run
            resumes from its model_dir and saves there.
          seed: seeds the order of the training data.
        """
        backends.current().require_training()
        if self.config.grad_checkpoint and keras.backend.backend() != "tensorflow":
            raise ConfigError("hparam grad_checkpoint=true trains on TensorFlow only: on JAX, "
                              "Keras's rematerialization cannot carry the batch norms' statistics "
                              "out of the stateless step; on PyTorch, the recomputation updates "
                              "them a second time. Train with grad_checkpoint=false, or with "
                              "KERAS_BACKEND=tensorflow.")
        source = source_from_spec(x, self.config)
        self._representative_data = source
        self.config = with_class_names_of(source, self.config)
        self._compiled_detector = None  # made again with this config
        replicas = num_replicas(self.training_distribution)
        if batch_size % replicas:
            raise ValueError(f"The global batch size {batch_size} does not split evenly over "
                             f"{replicas} replicas; use a multiple of {replicas}.")
        steps_per_epoch = steps_per_epoch or epoch_steps(source.count_examples(), batch_size)
        self._compile_for_run(batch_size, steps_per_epoch, epochs)
        callbacks = list(callbacks or [])
        start_step = self._restore_or_start(callbacks)
        if validation_data is not None:
            callbacks.append(ValidationMetrics(
                source_from_spec(validation_data, self.config), every=validation_freq,
                last_epoch=epochs, batch_size=validation_batch_size or batch_size,
                **(validation_options or {})))
        callbacks = _in_running_order(callbacks)
        data = self._distributed_dataset(source, batch_size, seed)
        epoch, done_in_epoch = divmod(start_step, steps_per_epoch)
        histories = []
        with distribution_scope(self.training_distribution):
            if done_in_epoch:  # a run resumed mid-epoch first finishes that epoch
                histories.append(super().fit(
                    data, epochs=epoch + 1, initial_epoch=epoch, callbacks=callbacks,
                    shuffle=False, steps_per_epoch=steps_per_epoch - done_in_epoch,
                    verbose=verbose))
                epoch += 1
            if epoch < epochs and not self.stop_training:
                histories.append(super().fit(
                    data, epochs=epochs, initial_epoch=epoch, callbacks=callbacks, shuffle=False,
                    steps_per_epoch=steps_per_epoch, verbose=verbose))
        self.weight_average.copy_to_variables()
        return _merged(histories) if histories else keras.callbacks.History()  # run complete

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: the network is built by `__init__`, the optimizer by `fit`.

        (Under a strategy Keras would otherwise read a batch and all-reduce it to build a
        symbolic copy of the model, which fails under MultiWorkerMirroredStrategy.)
        """

    def _compile_for_run(self, batch_size: int, steps_per_epoch: int, epochs: int) -> None:
        steps_per_execution = _largest_divisor(
            steps_per_epoch, self._compile_options["steps_per_execution"])
        with distribution_scope(self.training_distribution):
            optimizer = self._chosen_optimizer or make_optimizer(
                self.config, batch_size, steps_per_epoch, epochs)
            super().compile(optimizer=optimizer, steps_per_execution=steps_per_execution,
                            jit_compile=self._compile_options["jit_compile"],
                            run_eagerly=self._compile_options["run_eagerly"])
            if not optimizer.built:
                optimizer.build(self.training_step.trainable)

    def _restore_or_start(self, callbacks) -> int:
        """Resumes from a `TrainingCheckpoints` callback's model_dir, else starts training from
        the pretrained checkpoint or the current weights; returns the step reached."""
        checkpoints = [c for c in callbacks if isinstance(c, TrainingCheckpoints)]
        if len(checkpoints) > 1:
            raise ValueError("fit takes one TrainingCheckpoints callback, got "
                             f"{len(checkpoints)}.")
        step = checkpoints[0].restore(self) if checkpoints else None
        if step is not None:
            return step
        if self._training_start:
            checkpoint, only_scope = self._training_start
            load_training_start(self.network, self.weight_average, checkpoint,
                                skip_mismatch=self.config.skip_mismatch, only_scope=only_scope)
            self._training_start = None
        else:
            self.weight_average.reset()
        return int(keras.ops.convert_to_numpy(self.optimizer.iterations))

    def _distributed_dataset(self, source, batch_size: int, seed: int | None):
        """The training batches: on TensorFlow each replica's share of them; on JAX the global
        batches, which Keras shards over the devices of its distribution."""
        if keras.backend.backend() != "tensorflow":
            return build_dataset(source, self.config, is_training=True, batch_size=batch_size,
                                 seed=seed)
        strategy = self.distribute_strategy
        per_replica = batch_size // strategy.num_replicas_in_sync

        def dataset_fn(input_context):
            return build_dataset(source, self.config, is_training=True, batch_size=per_replica,
                                 input_context=input_context, seed=seed)

        return strategy.distribute_datasets_from_function(dataset_fn)

    # --- evaluation, prediction, export ----------------------------------------------------------

    def evaluate(self, x, batch_size: int = DEFAULT_BATCH_SIZE, *,
                 eval_samples: int | None = None, val_json_file=None, results_file=None,
                 report_dir=None, verbose=None) -> dict[str, float]:
        """Metrics on `x` (the forms `fit` takes). With the detection head the COCO metrics
        'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1', 'ARmax10', 'ARmax100', 'ARs', 'ARm',
        'ARl' and 'AP_/<class name>'; with the segmentation head 'mIoU', 'pixel_accuracy' and
        'IoU/<class id>'. `eval_samples`, `val_json_file`, `results_file`, `report_dir` are as
        in `--mode=eval`."""
        return evaluate(self.compiled_detector(), self.config, x,
                        batch_size=batch_size,
                        eval_samples=eval_samples, val_json_file=val_json_file,
                        results_file=results_file, report_dir=report_dir)

    def predict(self, images, batch_size: int = DEFAULT_BATCH_SIZE,
                verbose=None) -> dict[str, np.ndarray | list[np.ndarray]]:
        """Detections and masks in uint8 images of any sizes (a batch [B, H, W, 3] or a list of
        [H, W, 3]): the serving signature's outputs as NumPy arrays, the pre- and
        post-processing of the exported SavedModel. With the detection head `detection_boxes`
        (ymin, xmin, ymax, xmax in original pixels), `detection_scores`, `detection_classes`
        (1-based) and `num_detections`; with the segmentation head `segmentation_masks`, uint8
        [B, H, W] class per pixel (for a list of images, a list of [H, W] masks)."""
        detect = self.compiled_detector()
        chunks = [detect(images[start:start + batch_size])
                  for start in range(0, len(images), batch_size)]
        return {name: _joined([chunk[name] for chunk in chunks]) for name in chunks[0]}

    def compiled_detector(self) -> CompiledDetector:
        """The network's compiled detector, made once (it reads the weights at each call)."""
        if self._compiled_detector is None:
            self._compiled_detector = Detector(self.config, self.network).compiled()
        return self._compiled_detector

    def export(self, directory: str | os.PathLike, formats=DEFAULT_EXPORT_FORMATS,
               representative_data=None, tflite_input: str = "pixels",
               num_calibration_images: int = DEFAULT_CALIBRATION_STEPS,
               onnx_nms: bool = True) -> dict[str, Path]:
        """Writes what `--mode=export` writes: the SavedModel in `directory`, each TFLite file
        as `directory/<precision>.tflite`, 'onnx' as `directory/model.onnx` (`onnx_nms=False`:
        the pre-NMS boxes and scores, see `export.onnx`), 'openvino' as
        `directory/openvino/model.xml`; returns {format: path}.

        `tflite_int8` calibrates on `representative_data` (the forms `fit` takes), by default
        the data of the last `fit`. `tflite_input` is the TFLite input layout ('pixels' or
        'normalized', see `export.tflite`).
        """
        unknown = sorted(set(formats) - set(EXPORT_FORMATS))
        if unknown:
            raise ValueError(f"Unknown export formats {unknown}; choose from {EXPORT_FORMATS}.")
        representative_data = representative_data or self._representative_data
        if "tflite_int8" in formats and representative_data is None:
            raise ValueError("tflite_int8 calibrates on real images: pass representative_data "
                             "(e.g. the training data), or leave 'tflite_int8' out of formats.")
        written = {}
        if "saved_model" in formats:
            written["saved_model"] = export_saved_model(
                Detector(self.config, self.network), directory)
        for name in (f for f in formats if f.startswith("tflite_")):
            quantization = name.removeprefix("tflite_")
            written[name] = export_tflite(
                self.network, self.config, Path(directory) / f"{quantization}.tflite",
                quantization, dataset=representative_data,
                num_calibration_images=num_calibration_images, input_layout=tflite_input)
        if "onnx" in formats:
            written["onnx"] = export_onnx(self.network, self.config,
                                          Path(directory) / ONNX_FILE_NAME, nms=onnx_nms)
        if "openvino" in formats:
            written["openvino"] = export_openvino(
                self.network, self.config, Path(directory) / OPENVINO_DIR_NAME / OPENVINO_FILE_NAME)
        return written

    # --- Keras saving --------------------------------------------------------------------------

    def get_config(self):
        return {"name": self.name, "hparams": self.config.as_dict()}

    def get_compile_config(self):
        """None: the training set-up is `fit`'s, nothing to restore with the model."""
        return None

    @classmethod
    def from_config(cls, config):
        values = dict(config)
        return cls(Config(validate(values.pop("hparams"))), **values)


def epoch_steps(num_examples: int, batch_size: int) -> int:
    """Whole batches in an epoch of `num_examples` images."""
    if num_examples < batch_size:
        raise ConfigError(f"batch_size={batch_size} (--batch_size) exceeds the {num_examples} "
                          "images of an epoch.")
    return num_examples // batch_size


def _joined(chunks: list) -> np.ndarray | list[np.ndarray]:
    """One output of `predict` over its chunks: an array, or a list for per-image lists."""
    if isinstance(chunks[0], list):
        return [np.asarray(item) for chunk in chunks for item in chunk]
    return np.concatenate([np.asarray(chunk) for chunk in chunks])


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
