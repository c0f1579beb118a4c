"""Training curves read from a run's TensorBoard logs: model_dir/curves.png with the loss parts,
the learning rate and the validation metrics against the step.

Training writes its scalars in model_dir/train (`training.callbacks.StepSummaries`), validation
in model_dir/eval (`evaluation.model_evaluation.write_summaries`); a run resumed in the same
model_dir appends to them, and the last value written for a step is kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientdet_tf.diagnostics.plotting import new_figure, save_figure

CURVES_FILE_NAME = "curves.png"
TRAIN_LOGS, EVAL_LOGS = "train", "eval"
LEARNING_RATE = "learning_rate"
# The validation metrics drawn together (those present); per-class APs get a panel of their own.
MAIN_METRICS = ("AP", "AP50", "AP75", "ARmax100", "mIoU", "pixel_accuracy")
PER_CLASS_PREFIX = "AP_/"


def read_scalars(log_dir: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} of the scalars of every event file in `log_dir`, by step; of the
    values written for one step, the one written last (by the events' own wall time: the file
    names do not sort in writing order, e.g. a process's tenth writer before its ninth)."""
    by_tag: dict[str, dict[int, tuple[float, float]]] = {}
    for path in Path(log_dir).glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                scalar = _scalar(value)
                points = by_tag.setdefault(value.tag, {})
                step = int(event.step)
                if scalar is not None and event.wall_time >= points.get(step, (-1.0,))[0]:
                    points[step] = (event.wall_time, scalar)
    return {tag: (np.array(sorted(points)), np.array([points[s][1] for s in sorted(points)]))
            for tag, points in by_tag.items()}


def _scalar(value) -> float | None:
    """The number of a summary value: a TF2 scalar tensor or a TF1 simple_value; else None."""
    if value.HasField("tensor"):
        array = tf.make_ndarray(value.tensor)
        return float(array) if array.size == 1 and array.dtype.kind in "fiu" else None
    if value.HasField("simple_value"):
        return float(value.simple_value)
    return None


def plot_training_curves(model_dir: str | os.PathLike) -> Path:
    """Writes model_dir/curves.png from the run's logs; returns its path."""
    model_dir = Path(model_dir)
    train = read_scalars(model_dir / TRAIN_LOGS) if (model_dir / TRAIN_LOGS).is_dir() else {}
    evals = read_scalars(model_dir / EVAL_LOGS) if (model_dir / EVAL_LOGS).is_dir() else {}
    if not train and not evals:
        raise FileNotFoundError(
            f"No TensorBoard scalars in {model_dir}/{TRAIN_LOGS} or {model_dir}/{EVAL_LOGS}: "
            "give the --model_dir of a training run.")
    figure = new_figure(12, 8)
    panels = figure.subplots(2, 2, squeeze=False).ravel()
    losses = {tag: curve for tag, curve in train.items() if tag.endswith("loss")}
    _plot(panels[0], losses, "Training losses", "loss")
    _plot(panels[1], {tag: c for tag, c in train.items() if tag == LEARNING_RATE},
          "Learning rate", "learning rate")
    _plot(panels[2], {tag: evals[tag] for tag in MAIN_METRICS if tag in evals},
          "Validation metrics", "metric (0-1)", marker="o")
    _plot(panels[3], {tag.removeprefix(PER_CLASS_PREFIX): curve for tag, curve in evals.items()
                      if tag.startswith(PER_CLASS_PREFIX)},
          "Validation AP per class", "AP (IoU 0.5:0.95)", marker="o")
    figure.suptitle(f"Training run {model_dir}")
    return save_figure(figure, model_dir / CURVES_FILE_NAME)


def _plot(axes, curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, ylabel: str,
          marker: str | None = None) -> None:
    for tag, (steps, values) in sorted(curves.items()):
        axes.plot(steps, values, label=tag, marker=marker, markersize=3, linewidth=1)
    axes.set_title(title)
    axes.set_xlabel("training step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if curves:
        axes.legend(fontsize="small")
    else:
        axes.text(0.5, 0.5, "not logged", ha="center", va="center", transform=axes.transAxes)
