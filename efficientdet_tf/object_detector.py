"""`ObjectDetector`: EfficientDet as one Keras model that fine-tunes, evaluates, predicts, saves
and exports.

    detector = ObjectDetector.from_pretrained("efficientdet-lite0", num_classes=3)
    detector.fit("voc:annotations:images:train:10%", epochs=20, batch_size=16,
                 validation_data="voc:annotations:images:val:10%")
    detector.evaluate("voc:annotations:images:val:10%")   # {'AP': ..., 'AP50': ..., ...}
    detector.predict([image])                              # {'detection_boxes': ..., ...}
    detector.export("exported")                            # SavedModel and TFLite files
    detector.save("detector.keras")                        # keras.saving.load_model reads it

It holds the network, its pre- and post-processing, and overrides only Keras's hooks. `fit`
(`training.fitting`) is Keras's loop around the official step (`training.step`), with the
official optimizer and schedule, under the distribution the detector was built in; the averaged
weights replace the trained ones when it ends, as with Keras's `use_ema` optimizers. The
command line trains, evaluates and exports through the same functions.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import keras
import numpy as np

from efficientdet_tf import backends
from efficientdet_tf.config import Config, get_config
from efficientdet_tf.evaluation.model_evaluation import DEFAULT_BATCH_SIZE, evaluate
from efficientdet_tf.export.calibration import DEFAULT_CALIBRATION_STEPS
from efficientdet_tf.export.formats import DEFAULT_EXPORT_FORMATS, export_formats
from efficientdet_tf.inference.detector import CompiledDetector, Detector
from efficientdet_tf.inference.draw import DEFAULT_MIN_SCORE
from efficientdet_tf.inference.video import DEFAULT_BATCH_SIZE as VIDEO_BATCH_SIZE
from efficientdet_tf.inference.video import FrameDetections, VideoDetection
from efficientdet_tf.label_map import class_names
from efficientdet_tf.model.builder import build_model, mixed_precision_policy
from efficientdet_tf.model.checkpoint import load_weights
from efficientdet_tf.model.weight_average import WeightAverage
from efficientdet_tf.output_files import require_writable_folder
from efficientdet_tf.training import fitting
from efficientdet_tf.training.step import TrainingStep, trainable_variables


@keras.saving.register_keras_serializable(package="efficientdet_tf")
class ObjectDetector(keras.Model):
    """EfficientDet with its official training recipe, evaluation, pre- and post-processing.

    Args:
      model_name: an official model name (`efficientdet_tf.available_models()`), a saved config
        YAML, or a `Config`.
      hparams: overrides, as `get_config` takes them: 'key=value,...', a dict or a YAML path.

    Build it inside `strategy.scope()` (on JAX, a `keras.distribution.DataParallel`'s
    `scope()`) to train on several devices. With hparam mixed_precision=true its layers compute
    in mixed_bfloat16 on TPU, mixed_float16 on GPU and float32 on CPU (the official
    `get_precision`); Keras's global dtype policy is left as it is. Calling it on normalized
    images gives the network's raw outputs, as `build_model`'s network.
    """

    def __init__(self, model_name: str | os.PathLike | Config = "efficientdet-d0",
                 hparams: str | dict | os.PathLike | None = None, **kwargs):
        config = (model_name.override(hparams) if isinstance(model_name, Config)
                  else get_config(model_name, hparams))
        super().__init__(name=kwargs.pop("name", config.name), **kwargs)
        self.config = config
        backend = backends.current()
        # The devices it trains on: a tf.distribute strategy, or on JAX a Keras distribution.
        self.training_distribution = backend.current_distribution()
        self.network = build_model(
            config,
            synchronized_batch_norm=backend.cross_replica_batch_norm(self.training_distribution),
            dtype_policy=mixed_precision_policy(
                config.mixed_precision, backend.accelerator(self.training_distribution)))
        trainable = trainable_variables(self.network, config.var_freeze_expr)
        self.weight_average = WeightAverage(trainable, config.moving_average_decay)
        self.training_step = TrainingStep(config, self.network, trainable, self.weight_average)
        # Tracked, so that JAX's stateless step carries it with the model's state.
        self.loss_state = self.training_step.state_variables
        self.training_start = None
        self.training_options = fitting.TrainingOptions()
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

    def start_training_from(self, checkpoint: str | os.PathLike | None,
                            only_scope: str | None = None):
        """The next `fit` starts from `checkpoint`'s plain weights, its averages seeding the
        weight average (as the official trainers), unless it resumes its `TrainingCheckpoints`;
        None: from the current weights. Nothing is loaded now (`load_pretrained` loads too)."""
        self.training_start = (checkpoint, only_scope) if checkpoint else None

    def call(self, images, training=False):
        return self.network(images, training=training)

    # --- training --------------------------------------------------------------------------------

    def compile(self, optimizer=None, *, steps_per_execution: int = 1, jit_compile=None,
                run_eagerly=False):
        """Chooses how the next `fit` trains; `fit` compiles then, when the run's length is known.

        Without an optimizer `fit` makes the official one (SGD with momentum, warm-up then the
        configured decay over the epochs given to `fit`, loss scaling under mixed_float16). The
        loss is the recipe's; `steps_per_execution` steps run per compiled call (lowered to a
        divisor of the epoch's steps). `jit_compile`: whether XLA compiles the step; by default
        not on TensorFlow (XLA is slower on CPUs for this depthwise-heavy network) and always on
        JAX. `run_eagerly` runs the step op by op, as Python (Keras's debugging mode; one device
        only): no tracing, so a fit of a few steps starts at once, but each step is slower."""
        self.training_options = fitting.TrainingOptions(
            optimizer, steps_per_execution, jit_compile, run_eagerly)

    def train_step(self, *state_and_data):
        """Keras's hook (on JAX, stateless: `(state, data)`); the backend's driver runs it."""
        *state, data = state_and_data
        return backends.current().train_step(self, self.training_step, data, *state)

    def make_train_function(self, force=False):
        return backends.current().make_train_function(self, super().make_train_function, force)

    def fit(self, x, *, epochs: int = 1, batch_size: int = 64, steps_per_epoch=None,
            validation_data=None, validation_freq: int = 1, validation_batch_size=None,
            validation_options: dict | None = None, callbacks=None, verbose="auto",
            seed: int | None = None):
        """Trains on `x` with the official recipe; returns Keras's `History`.

        Args:
          x: a dataset spec ('synthetic:train', 'voc:<xml_dir>:<image_dir>', a TFRecord glob,
            see `data.pipeline.DATASET_SPECS`), a `data.sources.base.Source`, or a
            `tf.data.Dataset` of unbatched `(uint8 image [H, W, 3], {'boxes': [N, 4] ymin, xmin,
            ymax, xmax in pixels, 'classes': [N]})`. Augmentation and anchor labelling are the
            recipe's. Its class names, if it has them, become `config.label_map` (unless set),
            so that saved files and drawings name the classes.
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
        backends.current().check_training(self.config)
        data = fitting.training_data(x, validation_data, self.config)
        if data.config != self.config:
            self.config, self._compiled_detector = data.config, None
        return fitting.fit(
            self, data, epochs=epochs, batch_size=batch_size,
            steps_per_epoch=steps_per_epoch or fitting.epoch_steps(
                data.source.count_examples(), batch_size),
            validation_freq=validation_freq,
            validation_batch_size=validation_batch_size or batch_size,
            validation_options=validation_options or {}, callbacks=callbacks or [],
            verbose=verbose, seed=seed)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: the network is built by `__init__`, the optimizer by `fit` (under a
        strategy Keras would otherwise read a batch and all-reduce it to build a symbolic copy
        of the model, which fails under MultiWorkerMirroredStrategy)."""

    # --- evaluation, prediction, export ----------------------------------------------------------

    def evaluate(self, x, batch_size: int = DEFAULT_BATCH_SIZE, *,
                 eval_samples: int | None = None, val_json_file=None, results_file=None,
                 report_dir=None, testdev_dir=None) -> dict[str, float]:
        """Metrics on `x` (the forms `fit` takes). With the detection head the COCO metrics
        'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1', 'ARmax10', 'ARmax100', 'ARs', 'ARm',
        'ARl' and 'AP_/<class name>'; with the segmentation head 'mIoU', 'pixel_accuracy' and
        'IoU/<class id>'. `eval_samples`, `val_json_file`, `results_file`, `report_dir` are as
        in `--mode=eval`; `testdev_dir`, for data without labels (COCO test-dev), writes the
        detections there for the COCO evaluation server instead (the JSON and its zip; see
        `evaluation.model_evaluation.testdev_files`) and returns {}."""
        return evaluate(self.compiled_detector(), self.config, x, batch_size=batch_size,
                        eval_samples=eval_samples, val_json_file=val_json_file,
                        results_file=results_file, report_dir=report_dir,
                        testdev_dir=testdev_dir)

    def predict(self, images, batch_size: int = DEFAULT_BATCH_SIZE
                ) -> dict[str, np.ndarray | list[np.ndarray]]:
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

    def predict_video(self, path: str | os.PathLike, output_path: str | os.PathLike | None = None,
                      *, batch_size: int = VIDEO_BATCH_SIZE, min_score: float = DEFAULT_MIN_SCORE,
                      detections_file: str | os.PathLike | None = None
                      ) -> Iterator[FrameDetections]:
        """The detections of each frame of the video at `path` as `--mode=video` finds them
        (`inference.video`), scoring at least `min_score`: `FrameDetections` (index, time in
        seconds, boxes in pixels, scores, classes, class names), frame by frame. `output_path`
        (.mp4 or .avi) gets the video with them drawn, `detections_file` them as JSON lines; both
        are written once the last frame is done. The video and outputs are checked now; the
        frames are read as they are asked for."""
        for argument, output in (("output_path", output_path),
                                 ("detections_file", detections_file)):
            if output is not None:
                require_writable_folder(Path(output).parent, argument)
        video = VideoDetection(path, class_names(self.config), output_video=output_path,
                               detections_file=detections_file, batch_size=batch_size,
                               min_score=min_score)
        return video.run(self.compiled_detector())

    def compiled_detector(self) -> CompiledDetector:
        """The network's compiled detector, made once (it reads the weights at each call)."""
        if self._compiled_detector is None:
            self._compiled_detector = Detector(self.config, self.network).compiled()
        return self._compiled_detector

    def export(self, directory: str | os.PathLike, formats=DEFAULT_EXPORT_FORMATS,
               representative_data=None, tflite_input: str = "pixels",
               num_calibration_images: int = DEFAULT_CALIBRATION_STEPS,
               onnx_nms: bool = True) -> dict[str, Path]:
        """Writes what `--mode=export` writes (`export.formats.export_formats`): by default the
        SavedModel in `directory` and `directory/float32.tflite`, `directory/float16.tflite`;
        'tflite_int8', 'onnx_int8' (`directory/model_int8.onnx`) and 'openvino_int8'
        (`directory/openvino_int8/model.xml`), calibrated on the first `num_calibration_images` of
        `representative_data` (the forms `fit` takes), 'onnx' (`directory/model.onnx`) and
        'openvino' (`directory/openvino/model.xml`) on request.
        Returns {format: path}."""
        return export_formats(
            Detector(self.config, self.network), directory, formats,
            calibration_data=representative_data, tflite_input=tflite_input,
            num_calibration_images=num_calibration_images, onnx_nms=onnx_nms)

    # --- Keras saving --------------------------------------------------------------------------

    def get_config(self):
        return {"name": self.name, "hparams": self.config.as_dict()}

    def get_compile_config(self):
        """None: the training set-up is `fit`'s, nothing to restore with the model."""
        return None

    @classmethod
    def from_config(cls, config):
        values = dict(config)
        return cls(Config(values.pop("hparams")), **values)


def _joined(chunks: list) -> np.ndarray | list[np.ndarray]:
    """One output of `predict` over its chunks: an array, or a list for per-image lists."""
    if isinstance(chunks[0], list):
        return [np.asarray(item) for chunk in chunks for item in chunk]
    return np.concatenate([np.asarray(chunk) for chunk in chunks])
