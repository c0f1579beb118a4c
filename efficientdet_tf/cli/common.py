"""Flags that several modes share, named as in the official `main.py`, and the config they
select."""

from absl import flags

from efficientdet_tf.config import Config, get_config

flags.DEFINE_string("model_name", "efficientdet-d0",
                    "Model name (e.g. efficientdet-d0, efficientdet-lite0) or a saved config YAML.")
flags.DEFINE_string("hparams", "", "Overrides: 'key=value,nested.key=value' or a YAML file.")
flags.DEFINE_string("ckpt", None,
                    "Checkpoint to load: a prefix or a directory (official layout or a training "
                    "run's model_dir), or an official name such as efficientdet-d0 (downloaded "
                    "once into the Keras cache).")
flags.DEFINE_string("val_file_pattern", None,
                    "Evaluation data: a TFRecord glob, 'coco:<annotations.json>:<image_dir>', "
                    "'voc:<xml_dir>:<image_dir>', 'csv:<file.csv>:<image_dir>', "
                    "'masks:<masks_dir>:<image_dir>[:<ids.txt>]' (segmentation masks, VOC "
                    "SegmentationClass PNGs; voc/csv/masks: add ':val:10%' for the 10% held out "
                    "of the training spec's folder), or 'synthetic:val'.")
flags.DEFINE_string("val_json_file", None,
                    "COCO ground-truth JSON of --val_file_pattern; default: the dataset's own.")
flags.DEFINE_integer("eval_samples", None, "Evaluate only the first this many images.")
flags.DEFINE_integer("batch_size", 64, "Global batch size (training: split over the replicas).")


def config_from_flags(flag_values) -> Config:
    return get_config(flag_values.model_name, flag_values.hparams)
