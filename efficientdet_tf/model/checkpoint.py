"""Loading and saving weights: the official checkpoint layout, and this project's training runs.

The official release checkpoints (`efficientdet-d0.tar.gz`) are TF1 name-based checkpoints with
one entry per variable, named like `efficientnet-b0/blocks_3/conv2d/kernel`, plus an
`<name>/ExponentialMovingAverage` shadow that the official loader prefers. This project's layers
carry the official scope names, so the only translation between a Keras variable and its entry
is `checkpoint_name` below. `save_weights` writes the same layout. The training loop's own
checkpoints (object-based, with optimizer and weight average) load through `load_weights` too.
"""

from __future__ import annotations

import logging
import os

import keras
import numpy as np
import tensorflow as tf

from efficientdet_tf import backends
from efficientdet_tf.errors import ConfigError, FaultError
from efficientdet_tf.model.official_weights import is_official_name, official_checkpoint
from efficientdet_tf.model.weight_average import WeightAverage
from efficientdet_tf.output_files import remove, write_errors_named

EMA_SUFFIX = "/ExponentialMovingAverage"
_OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # present in object-based checkpoints only
# What TensorFlow's checkpoint reader raises for files it cannot read whole: IndexError for a
# truncated data file, DataLossError for a checksum that does not match, others for a bad index.
_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, OSError)
log = logging.getLogger(__name__)


class CheckpointMismatchError(ConfigError):
    """The checkpoint lacks some of the model's variables or holds them with other shapes."""


class DamagedCheckpointError(FaultError):
    """A checkpoint whose files do not read back whole (truncated, corrupted, a part missing)."""


def checkpoint_damage(prefix: str) -> str | None:
    """Why checkpoint `prefix` does not read back whole, in a few words ('Read less bytes than
    requested'), or None when every tensor reads back with its checksum."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for key in reader.get_variable_to_dtype_map():
            reader.get_tensor(key)
    except _READ_ERRORS as error:
        text = (getattr(error, "message", None) or str(error) or type(error).__name__).strip()
        return text.splitlines()[0]
    return None


def require_undamaged(prefix: str) -> None:
    """Raises `DamagedCheckpointError` naming `prefix` unless it reads back whole."""
    damage = checkpoint_damage(prefix)
    if damage is not None:
        raise DamagedCheckpointError(
            f"Checkpoint {prefix} is damaged ({damage}): its files are truncated or corrupted. "
            "Copy it again, or give an earlier checkpoint of the run (<model_dir>/ckpt-<step>).")


def checkpoint_name(variable) -> str:
    """The official checkpoint entry of a model variable."""
    path = variable.path
    # Keras 3 names a depthwise kernel `kernel`; TF1 and Keras 2 named it `depthwise_kernel`.
    if path.endswith("/depthwise_conv2d/kernel"):
        return path[: -len("kernel")] + "depthwise_kernel"
    return path


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """The checkpoint prefix for `path`: a prefix itself, a directory holding checkpoints, or
    the name of an official checkpoint (`efficientdet-d0`) when no such path exists."""
    path = str(path)
    if is_official_name(path) and not tf.io.gfile.exists(path):
        return official_checkpoint(path)
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            indexes = sorted(tf.io.gfile.glob(os.path.join(path, "*.index")))
            if len(indexes) != 1:
                raise FileNotFoundError(
                    f"No checkpoint in directory {path!r}: expected a 'checkpoint' state file or "
                    f"exactly one '<prefix>.index' file, found {len(indexes)}."
                )
            latest = indexes[0][: -len(".index")]
        return latest
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(
            f"No checkpoint at {path!r}: give a checkpoint prefix (the path without "
            "'.index' / '.data-*'), a directory that holds one, or an official name such as "
            "'efficientdet-d0' or 'efficientnet-b0'."
        )
    return path


def load_weights(
    model: keras.Model,
    path: str | os.PathLike,
    skip_mismatch: bool = False,
    use_ema: bool = True,
    only_scope: str | None = None,
) -> list[str]:
    """Loads a checkpoint into `model`; returns the names of the variables skipped.

    `path` is an official-layout checkpoint or a training run's checkpoint (a prefix, or a
    directory whose latest checkpoint is taken). `use_ema` takes the moving averages of the
    weights where the checkpoint has them, as the official loader does. A model variable missing
    from the checkpoint is an error. One with another shape is an error too, unless
    `skip_mismatch` (fine-tuning with another `num_classes`): then it keeps its initial value and
    a warning names it. `only_scope` (e.g. `efficientnet-b0`) loads only the variables under that
    scope, e.g. a backbone from an EfficientNet classification checkpoint.
    """
    prefix = resolve_checkpoint(path)
    require_undamaged(prefix)
    reader = tf.train.load_checkpoint(prefix)
    stored_shapes = reader.get_variable_to_shape_map()
    if _OBJECT_GRAPH_KEY in stored_shapes:
        if skip_mismatch or only_scope:
            log.info("skip_mismatch / only_scope apply to official-layout checkpoints only; "
                     "%s is a training checkpoint and must fit the model whole.", prefix)
        _load_training_checkpoint(model, prefix, use_ema)
        return []
    missing, mismatched, matches = [], [], []
    for variable in model.weights:
        name = checkpoint_name(variable)
        if not _in_scope(name, only_scope):
            continue
        key = name + EMA_SUFFIX if use_ema and name + EMA_SUFFIX in stored_shapes else name
        if key not in stored_shapes:
            missing.append(name)
        elif tuple(stored_shapes[key]) != tuple(variable.shape):
            mismatched.append(
                f"{name}: checkpoint {list(stored_shapes[key])} vs model {list(variable.shape)}")
        else:
            matches.append((variable, key))
    if missing or (mismatched and not skip_mismatch):
        raise CheckpointMismatchError(_mismatch_message(prefix, model, missing, mismatched))
    if mismatched:
        log.warning(
            "Skipped %d variables whose shape differs from checkpoint %s (they keep their "
            "initial values):\n  %s", len(mismatched), prefix, "\n  ".join(mismatched))
    for variable, key in matches:
        variable.assign(reader.get_tensor(key).astype(variable.dtype))
    return [entry.split(":")[0] for entry in mismatched]


def load_training_start(
    model: keras.Model,
    average: WeightAverage,
    path: str | os.PathLike,
    skip_mismatch: bool = False,
    only_scope: str | None = None,
) -> list[str]:
    """Loads a checkpoint to train from, as the official trainers do; returns the names skipped.

    The checkpoint's plain values go into `model`, so that the weights that were trained go on
    training, and its moving averages seed `average` (restarted at update 0); a variable without
    one (or skipped) starts its average at its own value. So does the official
    `util_keras.restore_ckpt`, which puts the `ExponentialMovingAverage` shadows into the
    optimizer's average slots. `path`, `skip_mismatch` and `only_scope` are as in `load_weights`,
    whose default (the averages into the model) is the one for inference and evaluation.
    """
    prefix = resolve_checkpoint(path)
    skipped = load_weights(model, prefix, skip_mismatch, use_ema=False, only_scope=only_scope)
    average.reset()
    reader = tf.train.load_checkpoint(prefix)
    stored_shapes = reader.get_variable_to_shape_map()
    if _OBJECT_GRAPH_KEY in stored_shapes:
        for path, shadow in average.shadows.items():
            key = _training_key(_AVERAGE_KEYS, path)
            if key in stored_shapes and tuple(stored_shapes[key]) == tuple(shadow.shape):
                shadow.assign(reader.get_tensor(key).astype(shadow.dtype))
        return skipped
    for variable in model.weights:
        shadow = average.shadows.get(variable.path)
        name = checkpoint_name(variable)
        key = name + EMA_SUFFIX
        if (shadow is not None and _in_scope(name, only_scope) and key in stored_shapes
                and tuple(stored_shapes[key]) == tuple(shadow.shape)):
            shadow.assign(reader.get_tensor(key).astype(shadow.dtype))
    return skipped


def _in_scope(name: str, scope: str | None) -> bool:
    return not scope or name.startswith(scope.rstrip("/") + "/")


class TrainingState:
    """A training run's variables as `tf.train.Checkpoint` saves them (`checkpoint`): the
    network's weights under `model/by_path/<path>`, the optimizer's under `optimizer/by_path/`,
    the weight average's shadows under `ema/shadows/<path of the averaged weight>` and its update
    count as `ema/num_updates`.

    On TensorFlow the checkpoint holds the Keras variables themselves. Other backends' variables
    are not TensorFlow's, so there it holds TensorFlow copies: `before_save()` fills them and
    `after_restore()` puts what was read into the Keras variables. The keys are the same either
    way (resuming a whole run on the other backend is not tested).
    """

    def __init__(self, network_weights: list, average: WeightAverage,
                 optimizer_variables: list = ()):
        self._copies = []  # (Keras variable, TensorFlow copy)
        parts = {"model": _VariablesByPath(self._saved(_by_path(network_weights))),
                 "ema": _AverageByPath(self._saved(average.shadows),
                                       self._saved({"": average.num_updates})[""])}
        if optimizer_variables:
            parts["optimizer"] = _VariablesByPath(self._saved(_by_path(optimizer_variables)))
        self.checkpoint = tf.train.Checkpoint(**parts)

    def _saved(self, variables: dict) -> dict:
        """What the checkpoint holds for {key: Keras variable}: the variables, or TensorFlow
        copies (`Backend.checkpoint_variables`), which are kept in step."""
        saved = backends.current().checkpoint_variables(variables)
        self._copies.extend((variable, saved[key]) for key, variable in variables.items()
                            if saved[key] is not variable)
        return saved

    def before_save(self) -> None:
        for variable, copy in self._copies:
            copy.assign(keras.ops.convert_to_numpy(variable).astype(copy.dtype.as_numpy_dtype))

    def after_restore(self) -> None:
        for variable, copy in self._copies:
            variable.assign(copy.numpy().astype(variable.dtype))


class _VariablesByPath(tf.Module):
    """Variables keyed by their unique paths.

    (Keras 3 keeps sub-layers in its own containers, which tf.train.Checkpoint does not follow,
    so a checkpoint of the Keras model object itself would miss most of its weights.)
    """

    def __init__(self, by_path: dict):
        super().__init__()
        self.by_path = by_path


class _AverageByPath(tf.Module):
    def __init__(self, shadows: dict, num_updates):
        super().__init__()
        self.shadows = shadows
        self.num_updates = num_updates


def _by_path(variables: list) -> dict:
    by_path = {v.path: v for v in variables}
    if len(by_path) != len(variables):
        raise ValueError("Variables to checkpoint must have unique paths.")
    return by_path


def _load_training_checkpoint(model: keras.Model, prefix: str, use_ema: bool) -> None:
    """Model weights (and, with `use_ema`, their averages) from a checkpoint of the trainer.

    The values are read by their keys in the checkpoint, the names `tf.train.Checkpoint` gives
    `TrainingState` entries (as the trainer writes them), and assigned as arrays: any Keras
    backend reads a checkpoint written on TensorFlow.
    """
    reader = tf.train.load_checkpoint(prefix)
    stored_shapes = reader.get_variable_to_shape_map()
    problems, matches = [], []
    for variable in model.weights:
        key = _training_key(_WEIGHTS_KEYS, variable.path)
        shadow = _training_key(_AVERAGE_KEYS, variable.path)
        if use_ema and variable.trainable and shadow in stored_shapes:
            key = shadow
        if key not in stored_shapes:
            problems.append(f"{variable.path}: missing from the checkpoint")
        elif tuple(stored_shapes[key]) != tuple(variable.shape):
            problems.append(f"{variable.path}: checkpoint {list(stored_shapes[key])} vs model "
                            f"{list(variable.shape)}")
        else:
            matches.append((variable, key))
    if problems:
        raise CheckpointMismatchError(
            f"Training checkpoint {prefix!r} does not fit model {model.name!r}:\n  "
            + "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
            + "\nBuild the model with the config saved in the run's model_dir (config.yaml).")
    for variable, key in matches:
        variable.assign(reader.get_tensor(key).astype(variable.dtype))


# Where a trainer's checkpoint keeps the weights and their averages (see `TrainingState`).
_WEIGHTS_KEYS = "model/by_path"
_AVERAGE_KEYS = "ema/shadows"


def _training_key(prefix: str, path: str) -> str:
    """The key of variable `path` under `prefix` in a trainer's checkpoint: tf.train.Checkpoint
    escapes dict keys ('.' doubled, '/' as '.S')."""
    escaped = path.replace(".", "..").replace("/", ".S")
    return f"{prefix}/{escaped}/.ATTRIBUTES/VARIABLE_VALUE"


def _mismatch_message(prefix, model, missing, mismatched) -> str:
    lines = [f"Checkpoint {prefix!r} does not fit model {model.name!r}."]
    if missing:
        lines.append(f"{len(missing)} model variables are missing from the checkpoint:")
        lines += [f"  {name}" for name in missing]
    if mismatched:
        lines.append(f"{len(mismatched)} variables have another shape in the checkpoint:")
        lines += [f"  {entry}" for entry in mismatched]
    lines.append(
        "Build the model with the config the checkpoint was trained with (model_name, "
        "num_classes, aspect_ratios, ...)"
        + (", or pass skip_mismatch=True to start the mismatched variables (e.g. the class "
           "head for another num_classes) from scratch." if mismatched and not missing else ".")
    )
    return "\n".join(lines)


def save_weights(
    model: keras.Model,
    path: str | os.PathLike,
    ema_values: dict[str, np.ndarray] | None = None,
) -> str:
    """Writes the model's weights as an official-layout checkpoint at prefix `path`.

    `ema_values` maps checkpoint names to moving-average values, written as their
    `ExponentialMovingAverage` shadows. The files appear only once complete, so an
    interrupted save never leaves a half-written checkpoint under `path`.
    """
    prefix = str(path)
    tensors = {checkpoint_name(v): tf.convert_to_tensor(v) for v in model.weights}
    for name, value in (ema_values or {}).items():
        tensors[name + EMA_SUFFIX] = tf.convert_to_tensor(value)
    names = sorted(tensors)
    staging = f"{prefix}.tmp-{os.getpid()}"
    try:
        with write_errors_named("Checkpoint", prefix):
            tf.io.gfile.makedirs(os.path.dirname(prefix) or ".")
            tf.raw_ops.SaveV2(
                prefix=staging,
                tensor_names=names,
                shape_and_slices=[""] * len(names),
                tensors=[tensors[name] for name in names],
            )
            for data_file in tf.io.gfile.glob(staging + ".data-*"):
                tf.io.gfile.rename(data_file, prefix + data_file[len(staging):], overwrite=True)
            tf.io.gfile.rename(staging + ".index", prefix + ".index", overwrite=True)
    finally:
        for partial in tf.io.gfile.glob(staging + "*"):
            remove(partial)
    return prefix
