"""Flags that several modes share, named as in the official `main.py`, and the config they
select."""

from absl import flags

from efficientdet_tf.config import Config, get_config
from efficientdet_tf.data.pipeline import DATASET_SPECS

flags.DEFINE_string("model_name", "efficientdet-d0",
                    "Model name (e.g. efficientdet-d0, efficientdet-lite0) or a saved config YAML.")
flags.DEFINE_string("hparams", "", "Overrides: 'key=value,nested.key=value' or a YAML file.")
flags.DEFINE_string("ckpt", None,
                    "Checkpoint to load: a prefix or a directory (official layout or a training "
                    "run's model_dir), or an official name such as efficientdet-d0 (downloaded "
                    "once into the Keras cache).")
flags.DEFINE_string("val_file_pattern", None,
                    f"Evaluation data: {DATASET_SPECS}; e.g. 'synthetic:val', or "
                    "'voc:<xml_dir>:<image_dir>:val:10%' for the 10% held out of the training "
                    "folder.")
flags.DEFINE_string("val_json_file", None,
                    "COCO ground-truth JSON of --val_file_pattern; default: the dataset's own.")
flags.DEFINE_integer("eval_samples", None, "Evaluate only the first this many images.")
flags.DEFINE_integer("batch_size", 64, "Global batch size (training: split over the replicas).")


def config_from_flags(flag_values) -> Config:
    return get_config(flag_values.model_name, flag_values.hparams)
