"""`--mode=check_data`: counts, likely labelling mistakes and drawings of a dataset, written to
--output_dir before any training (see `diagnostics.data_check`). The data: --train_file_pattern
(that of `train`) and optionally --val_file_pattern; the model: --model_name and --hparams."""

from __future__ import annotations

from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import usage_errors
from efficientdet_tf.config import ConfigError
from efficientdet_tf.diagnostics.data_check import DEFAULT_NUM_IMAGES, check_data

flags.DEFINE_string("output_dir", None, "--mode=check_data: where report.json, report.md, "
                    "box_sizes.png and samples/ go. --mode=video: where "
                    "detections_by_frame.jsonl (each frame's detections) goes.")
flags.DEFINE_integer("num_images", DEFAULT_NUM_IMAGES,
                     "--mode=check_data: training samples to draw (0: none).")


def run(flag_values) -> None:
    if not flag_values.train_file_pattern or not flag_values.output_dir:
        raise ConfigError("--mode=check_data needs --train_file_pattern (a dataset spec) and "
                          "--output_dir (where the report goes).")
    config = config_from_flags(flag_values)
    with usage_errors():
        report = check_data(config, flag_values.train_file_pattern, flag_values.output_dir,
                            val_spec=flag_values.val_file_pattern,
                            num_images=flag_values.num_images)
    for title, part in (("training data", report), ("validation data", report.get("validation"))):
        if part is None:
            continue
        print(f"{title}: {part['images']} images, {part['boxes']} boxes, "
              f"{part['weakly_matched_boxes']} weakly matched")
        for warning in part["warnings"]:
            print(f"  warning: {warning}")
    print(f"Report written to {flag_values.output_dir}/report.md")
