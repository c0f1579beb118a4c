"""`--mode=eval`: COCO metrics of a checkpoint or an exported file on a dataset.

Uses --val_file_pattern, --val_json_file, --eval_samples and --batch_size (shared with
train_and_eval, in `common`), --report_dir (the evaluation report), and --ckpt (a checkpoint) or
--saved_model_dir (a SavedModel directory, or a .tflite, .onnx or OpenVINO .xml file, with the
--model_name / --hparams it was exported with).
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import flagged_detector, usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.evaluation.model_evaluation import RESULTS_FILE_NAME, evaluate

flags.DEFINE_string("eval_dir", None,
                    f"Where {RESULTS_FILE_NAME} (COCO results) and TensorBoard metrics go.")
flags.DEFINE_string("report_dir", None,
                    "Where the evaluation report goes: per_class.csv, pr_curves.png, "
                    "confusion_matrix.png/.csv, predictions.png.")


def run(flag_values) -> None:
    if not flag_values.val_file_pattern:
        raise ConfigError("--mode=eval needs --val_file_pattern, a dataset spec such as "
                          "'synthetic:val'.")
    config = config_from_flags(flag_values)
    detector = flagged_detector(flag_values, config, "--mode=eval")
    eval_dir = Path(flag_values.eval_dir) if flag_values.eval_dir else None
    with usage_errors():
        metrics = evaluate(
            detector,
            config,
            flag_values.val_file_pattern,
            batch_size=flag_values.batch_size,
            eval_samples=flag_values.eval_samples,
            val_json_file=flag_values.val_json_file,
            summary_writer=eval_dir,
            results_file=eval_dir / RESULTS_FILE_NAME if eval_dir else None,
            report_dir=flag_values.report_dir,
        )
    width = max(len(name) for name in metrics)
    for name, value in metrics.items():
        print(f"{name:{width}s} {value:.4f}")
