"""`--mode=eval`: COCO metrics of a checkpoint or an exported file on a dataset.

Uses --val_file_pattern, --val_json_file, --eval_samples and --batch_size (shared with
train_and_eval, in `common`), --report_dir (the evaluation report), and --ckpt (a checkpoint) or
--saved_model_dir (a SavedModel directory, or a .tflite, .onnx or OpenVINO .xml file, with the
--model_name / --hparams it was exported with).

--testdev_dir: for data without labels (COCO test-dev, as the official `main.py --testdev_dir`), the
detections are written there as the COCO evaluation server's results file and its zip, unscored.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import flagged_detector, usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.evaluation.model_evaluation import (
    RESULTS_FILE_NAME,
    TESTDEV_RESULTS_FILE_NAME,
    evaluate,
    testdev_files,
)
from efficientdet_tf.output_files import require_writable_folder

flags.DEFINE_string("eval_dir", None,
                    f"Where {RESULTS_FILE_NAME} (COCO results) and TensorBoard metrics go.")
flags.DEFINE_string("report_dir", None,
                    "Where the evaluation report goes: per_class.csv, pr_curves.png, "
                    "confusion_matrix.png/.csv, predictions.png.")
flags.DEFINE_string("testdev_dir", None,
                    "For data without labels (COCO test-dev: a 'coco:' spec of "
                    "image_info_test-dev2017.json, or TFRecords of it): where its detections go, "
                    f"as {TESTDEV_RESULTS_FILE_NAME} and its zip for the COCO evaluation server; "
                    "no metrics.")


def run(flag_values) -> None:
    if not flag_values.val_file_pattern:
        raise ConfigError("--mode=eval needs --val_file_pattern, a dataset spec such as "
                          "'synthetic:val'.")
    if flag_values.testdev_dir:
        _check_testdev_flags(flag_values)
    for name in ("eval_dir", "report_dir", "testdev_dir"):
        if flag_values[name].value:
            require_writable_folder(flag_values[name].value, f"--{name}")
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
            testdev_dir=flag_values.testdev_dir,
        )
    if flag_values.testdev_dir:
        results, archive = testdev_files(flag_values.testdev_dir)
        print(f"Test-dev detections written to {results} and {archive}: upload the zip to the "
              "COCO evaluation server.")
        return
    width = max(len(name) for name in metrics)
    for name, value in metrics.items():
        print(f"{name:{width}s} {value:.4f}")


def _check_testdev_flags(flag_values) -> None:
    given = [f"--{name}" for name in ("eval_dir", "report_dir", "val_json_file")
             if flag_values[name].value]
    if given:
        raise ConfigError("--testdev_dir writes the detections of images without labels, "
                          f"unscored: leave out {', '.join(given)}.")
