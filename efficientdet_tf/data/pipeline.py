"""The tf.data input pipeline of EfficientDet: decoded examples -> (images, labels) batches.

    dataset = build_dataset('train-*.tfrecord', config, is_training=True, batch_size=8)
    dataset = build_dataset('coco:annotations/instances_val2017.json:val2017', config,
                            is_training=False, batch_size=8)
    dataset = build_dataset('synthetic:train', config, is_training=True, batch_size=8)

Dataset specs (`source_from_spec`): `DATASET_SPECS` says what they are, once (the command
line's help texts show it); `SPEC_KINDS` holds the grammar of each kind (`sources.synthetic`,
`sources.coco`, `sources.voc_folder`, `sources.csv_annotations`, `sources.mask_folder` read them;
TFRecords are in the official layout). A `Source` passes through, and a `tf.data.Dataset` of
images and pixel boxes becomes a `sources.TFDatasetSource`. With "segmentation" in config.heads,
synthetic data and TFRecords come with their masks. The hold-out suffix is
`named_boxes.HoldOut`'s; voc: and csv: class names get the ids of config.label_map, else 1..K in
sorted order.

Training follows the official order: drop crowd boxes (config.skip_crowd_during_training),
GridMask (config.grid_mask; it moves no pixel, so segmentation masks stay right), AutoAugment
(config.autoaugment_policy), normalize (config.mean_rgb / stddev_rgb), random horizontal
flip (config.input_rand_hflip), scale jitter in [config.jitter_min, config.jitter_max] with random
crop and zero padding to config.image_size (the jitter scales config.target_size when set), then
anchor labels. Evaluation resizes keeping the aspect ratio and pads, exactly as inference does.
Both map the padded images by x * 2 / 255 - 1 with config.scale_range. Mask classes outside
0..config.seg_num_classes - 1 become the ignore label, logged. Boxes whose class id is outside
1..config.num_classes are dropped with a logged warning (a source that knows its class ids, COCO
JSON or synthetic, raises when the dataset is built instead).

Each batch is (images, labels): images float32 [B, height, width, 3]; labels a dict:
  'cls_targets_<l>'    int32 [B, H_l, W_l, A] for l in min_level..max_level: 0-based class of
                       each matched anchor, -1 for background (see `labeler`).
  'box_targets_<l>'    float32 [B, H_l, W_l, A * 4]: [ty, tx, th, tw] of matched anchors, else 0.
  'mean_num_positives' float32 [B]: the batch's mean number of positive anchors per image,
                       repeated for each image.
  'source_ids'         int64 [B]: image ids (COCO image id / the record's image/source_id).
  'image_scales'       float32 [B]: original-image pixels per network-input pixel.
  'groundtruth_data'   float32 [B, config.max_instances_per_image, 7]: per object ymin, xmin,
                       ymax, xmax (original-image pixels; for training, of the jittered crop),
                       is_crowd, area, class id (1-based); padded with -1 (is_crowd with 0).
                       Objects beyond max_instances_per_image are left out with a logged warning
                       (anchor labels still use all of them).
Anchor targets and 'mean_num_positives' are there with "object_detection" in config.heads; with
"segmentation":
  'segmentation_masks' uint8 [B, height, width]: the class of each pixel of the network input,
                       255 (`masks.IGNORE_LABEL`) where it is to be ignored, padding included.
  'image_sizes'        int32 [B, 2]: height and width of the original images (with image_scales,
                       what maps predictions back onto them).
"""

from __future__ import annotations

import logging

import tensorflow as tf

from efficientdet_tf.data import batch_labels
from efficientdet_tf.data.augmentation import augment, autoaugment, gridmask
from efficientdet_tf.data.formats.masks import IGNORE_LABEL
from efficientdet_tf.data.labeler import AnchorLabeler
from efficientdet_tf.data.preprocess import apply_scale_range, normalize_image, preprocess_image
from efficientdet_tf.data.sources.base import Source, TFDatasetSource, TFRecordSource
from efficientdet_tf.data.sources.coco import CocoJsonSource
from efficientdet_tf.data.sources.csv_annotations import CsvSource
from efficientdet_tf.data.sources.mask_folder import USAGE as MASK_FOLDER_USAGE
from efficientdet_tf.data.sources.mask_folder import MaskFolderSource
from efficientdet_tf.data.sources.named_boxes import split_hold_out
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.data.sources.voc_folder import VocFolderSource

log = logging.getLogger(__name__)

_OBJECT_KEYS = ("boxes", "classes", "is_crowd", "areas")

# Each kind of dataset spec and its grammar; a spec of no kind is a TFRecord glob.
SPEC_KINDS = {
    "synthetic": "'synthetic[:<split>[:<num_images>]]'",
    "coco": "'coco:<annotations.json>:<image_dir>'",
    "voc": "'voc:<annotations_dir>:<images_dir>[:train:<P>%|:val:<P>%]'",
    "csv": "'csv:<file.csv>:<images_dir>[:<SET>][:train:<P>%|:val:<P>%]'",
    "masks": MASK_FOLDER_USAGE,
}
DATASET_SPECS = (
    f"a dataset spec: {', '.join(SPEC_KINDS.values())}, or TFRecord glob(s), comma-separated. "
    "synthetic: the built-in shapes at the model's image size (split train or val); coco: a "
    "COCO detection JSON; voc: a folder of Pascal VOC XML files (as labelImg writes them); csv: "
    "boxes as CSV rows; masks: segmentation masks (VOC SegmentationClass PNGs) beside the images; "
    "':train:<P>%' / ':val:<P>%': the part of the folder left when P% of its images are held "
    "out, or the part held out")


def spec_kind(spec: str) -> str | None:
    """The kind of a dataset spec (a key of `SPEC_KINDS`), None for TFRecord globs."""
    kind = spec.partition(":")[0]
    return kind if kind in SPEC_KINDS else None


def source_from_spec(spec: str | Source | tf.data.Dataset, config) -> Source:
    """A `Source` from a dataset spec (`DATASET_SPECS`); a `Source` passes through."""
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, tf.data.Dataset):
        return TFDatasetSource(spec)
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        split, _, count = rest.partition(":")
        if count and not count.isdigit():
            raise ValueError(f"Dataset spec {spec!r}: number of images {count!r} is not a number.")
        num_images = int(count) if count else None
        return SyntheticShapes.split(split or "train", config.image_size, num_images,
                                     with_masks=_with_masks(config))
    if kind == "coco":
        annotation_file, _, image_dir = rest.partition(":")
        if not annotation_file or not image_dir:
            raise ValueError(f"Dataset spec {spec!r} needs both parts: {SPEC_KINDS['coco']}.")
        return CocoJsonSource(annotation_file, image_dir)
    if kind in ("voc", "csv"):
        return _named_boxes_source(spec, kind, rest, config)
    if kind == "masks":
        return _mask_folder_source(spec, rest)
    return TFRecordSource(spec, with_masks=_with_masks(config),
                          regenerate_source_id=config.regenerate_source_id)


def _with_masks(config) -> bool:
    return "segmentation" in config.heads


def with_class_names_of(source: Source, config):
    """The config with the class names of the training data as its label_map, unless it has one:
    the saved config then records the class ids given to names (validation data gets the same
    ones), and inference draws the names."""
    if config.label_map is not None or not source.class_names:
        return config
    return config.override({"label_map": source.class_names})


def _named_boxes_source(spec: str, kind: str, rest: str, config) -> Source:
    paths, hold_out = split_hold_out(rest.split(":"), spec)
    if kind == "voc" and len(paths) == 2 and all(paths):
        return VocFolderSource(*paths, label_map=config.label_map, hold_out=hold_out,
                               description=spec)
    if kind == "csv" and len(paths) in (2, 3) and all(paths):
        set_name = paths[2] if len(paths) == 3 else None
        return CsvSource(paths[0], paths[1], set_name=set_name, label_map=config.label_map,
                         hold_out=hold_out, description=spec)
    raise ValueError(f"Dataset spec {spec!r}: expected {SPEC_KINDS[kind]}.")


def _mask_folder_source(spec: str, rest: str) -> Source:
    paths, hold_out = split_hold_out(rest.split(":"), spec)
    if len(paths) not in (2, 3) or not all(paths):
        raise ValueError(f"Dataset spec {spec!r}: expected {SPEC_KINDS['masks']}.")
    return MaskFolderSource(*paths, hold_out=hold_out, description=spec)


def build_dataset(
    source: str | Source,
    config,
    *,
    is_training: bool,
    batch_size: int,
    input_context: tf.distribute.InputContext | None = None,
    deterministic: bool | None = None,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Batches of (images, labels) from `source` (a dataset spec or a `Source`).

    Training data is shuffled and repeated forever, with config.drop_remainder; evaluation data
    is read once, in order, keeping the last partial batch. `batch_size` is the batch of this
    input pipeline (per replica under `distribute_datasets_from_function`, which passes
    `input_context` for sharding). `seed` seeds the shuffling; augmentation draws follow TF's
    global seed (`tf.random.set_seed`). `deterministic` (element order) defaults to True for
    evaluation and for seeded training, False otherwise: parallel parsing may then hand out
    images of the next epoch before the last ones of this one, which is faster.
    """
    name = source if isinstance(source, str) else type(source).__name__
    source = source_from_spec(source, config)
    _check_class_ids(source, config)
    parser = ExampleParser(config, is_training)
    examples = source.examples(
        shuffle=is_training, repeat=is_training, input_context=input_context, seed=seed
    )
    if parser.segmentation:
        _check_masks(examples, source, config, name)
    dataset = examples.map(parser, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(
        batch_size,
        drop_remainder=config.drop_remainder and is_training,
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.map(_to_images_and_labels, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    if deterministic is None:
        deterministic = not is_training or seed is not None
    options.deterministic = deterministic
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _check_class_ids(source: Source, config) -> None:
    if source.max_class_id is not None and source.max_class_id > config.num_classes:
        raise ValueError(
            f"The dataset has class ids up to {source.max_class_id} but num_classes is "
            f"{config.num_classes}; set num_classes={source.max_class_id} (class ids are 1-based)."
        )


def _check_masks(examples: tf.data.Dataset, source: Source, config, name: str) -> None:
    if "segmentation_mask" not in examples.element_spec:
        raise ValueError(f"The dataset {name!r} has no segmentation masks, "
                         "which heads=[..., segmentation] needs: give synthetic data, TFRecords "
                         "with image/segmentation/class/encoded, or a masks: spec.")
    # Sources that know their classes have masks of the same classes, and 0 (background).
    if source.max_class_id is not None and source.max_class_id >= config.seg_num_classes:
        raise ValueError(
            f"The dataset {name!r} has mask classes up to {source.max_class_id} but "
            f"seg_num_classes is {config.seg_num_classes}; set "
            f"seg_num_classes={source.max_class_id + 1} (background 0 included).")


class ExampleParser:
    """Decoded example -> network input and per-image labels (training or evaluation).

    config.heads says which labels: anchor targets for object_detection, the mask at the input
    size for segmentation (the example must then have a 'segmentation_mask').
    """

    def __init__(self, config, is_training: bool):
        self.config = config
        self.is_training = is_training
        self.output_size = tuple(config.image_size)
        self.detection = "object_detection" in config.heads
        self.segmentation = "segmentation" in config.heads
        self.labeler = AnchorLabeler.from_config(config) if self.detection else None
        if is_training and config.autoaugment_policy and self.segmentation:
            raise ValueError(
                f"autoaugment_policy={config.autoaugment_policy} moves pixels (rotate, shear, "
                "translate) that the segmentation masks would not follow; set "
                "autoaugment_policy=null when heads include segmentation.")
        if is_training and config.autoaugment_policy:
            log.info("Training with AutoAugment policy %s", config.autoaugment_policy)

    def __call__(self, example: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        objects = _objects_with_known_classes(
            {key: example[key] for key in _OBJECT_KEYS},
            self.config.num_classes,
            example["source_id"],
        )
        mask = None
        if self.segmentation:
            mask = _mask_with_known_classes(
                example["segmentation_mask"], self.config.seg_num_classes, example["source_id"])
        if self.is_training:
            image, transform, objects, mask = self._augment(example["image"], objects, mask)
            image = apply_scale_range(image, self.config)  # preprocess_image's last step too
        else:  # inference pre-processing; fit_transform computes the same scale for the boxes
            image, _ = preprocess_image(example["image"], self.config)
            transform = augment.fit_transform(example["image"], self.output_size)
        outputs = self._label(image, transform, objects, example["source_id"])
        if self.segmentation:
            outputs[batch_labels.SEGMENTATION_MASKS] = augment.resize_crop_and_pad_mask(
                mask, transform, self.output_size, IGNORE_LABEL)
            outputs[batch_labels.IMAGE_SIZES] = tf.shape(example["image"])[:2]
        return outputs

    def _augment(self, image, objects, mask):
        config = self.config
        if config.skip_crowd_during_training:
            objects = _select(objects, tf.logical_not(objects["is_crowd"]))
        boxes = objects["boxes"]
        if config.grid_mask:
            image, boxes = gridmask.grid_mask(image, boxes)
        if config.autoaugment_policy:
            image, boxes = autoaugment.augment(image, boxes, config.autoaugment_policy)
        image = normalize_image(image, config.mean_rgb, config.stddev_rgb)
        if config.input_rand_hflip:
            image, boxes, mask = augment.random_flip_horizontal(image, boxes, mask)
        transform = augment.random_jitter_transform(
            image, self.output_size, config.jitter_min, config.jitter_max, config.target_size
        )
        image = augment.resize_crop_and_pad(image, transform, self.output_size)
        return image, transform, {**objects, "boxes": boxes}, mask

    def _label(self, image, transform, objects, source_id) -> dict[str, tf.Tensor]:
        boxes, has_area = augment.transform_boxes(objects["boxes"], transform, self.output_size)
        objects = _select({**objects, "boxes": boxes}, has_area)
        image_scale = 1.0 / transform.scale
        outputs = {
            "image": tf.ensure_shape(image, [*self.output_size, 3]),
            batch_labels.SOURCE_IDS: source_id,
            batch_labels.IMAGE_SCALES: image_scale,
            batch_labels.GROUNDTRUTH: self._groundtruth(objects, image_scale, source_id),
        }
        if self.detection:
            outputs.update(self._anchor_labels(objects))
        return outputs

    def _anchor_labels(self, objects) -> dict[str, tf.Tensor]:
        cls_targets, box_targets, num_positives = self.labeler.label(
            objects["boxes"], objects["classes"]
        )
        outputs = {"num_positives": num_positives}
        for level in cls_targets:
            outputs[batch_labels.class_targets(level)] = cls_targets[level]
            outputs[batch_labels.box_targets(level)] = box_targets[level]
        return outputs

    def _groundtruth(self, objects, image_scale, source_id) -> tf.Tensor:
        """[max_instances_per_image, 7] objects in original-image pixels, padded with -1."""
        max_instances = self.config.max_instances_per_image
        count = tf.shape(objects["classes"])[0]
        if count > max_instances:  # a tensor condition: autograph makes it a tf.cond
            _log_warning_in_graph(
                "image %s has %s objects; groundtruth_data keeps %s (raise "
                "max_instances_per_image to keep all)", source_id, count, max_instances)
        columns = tf.concat(
            [
                objects["boxes"] * image_scale,
                tf.cast(objects["is_crowd"], tf.float32)[:, None],
                objects["areas"][:, None],
                tf.cast(objects["classes"], tf.float32)[:, None],
            ],
            axis=1,
        )[:max_instances]
        padding_row = [[-1.0, -1.0, -1.0, -1.0, 0.0, -1.0, -1.0]]  # is_crowd 0
        padding = tf.tile(padding_row, [max_instances - tf.shape(columns)[0], 1])
        return tf.ensure_shape(tf.concat([columns, padding], axis=0),
                               [max_instances, batch_labels.GROUNDTRUTH_COLUMNS])



def _log_warning_in_graph(message: str, *values) -> None:
    """`log.warning(message, *values)` from inside the input graph, when the graph runs this op
    (in a branch taken only for the rare examples it reports)."""

    def log_warning(*tensors):
        log.warning(message, *(tensor.numpy() for tensor in tensors))
        return []

    tf.py_function(log_warning, [tf.convert_to_tensor(value) for value in values], Tout=[])


def _to_images_and_labels(batch: dict[str, tf.Tensor]):
    """Batched `ExampleParser` outputs -> (images, labels dict), with 'mean_num_positives' for
    object detection."""
    labels = {k: v for k, v in batch.items() if k not in ("image", "num_positives")}
    if "num_positives" in batch:  # object detection
        num_positives = batch["num_positives"]
        labels[batch_labels.MEAN_NUM_POSITIVES] = tf.fill(tf.shape(num_positives),
                                                          tf.reduce_mean(num_positives))
    return batch["image"], labels


def _select(objects: dict[str, tf.Tensor], keep: tf.Tensor) -> dict[str, tf.Tensor]:
    return {key: tf.boolean_mask(value, keep) for key, value in objects.items()}


def _objects_with_known_classes(objects, num_classes: int, source_id) -> dict[str, tf.Tensor]:
    known = (objects["classes"] >= 1) & (objects["classes"] <= num_classes)
    if not tf.reduce_all(known):
        _log_warning_in_graph("image %s has class ids outside 1 .. %s; dropped those boxes: %s",
                              source_id, num_classes, tf.boolean_mask(objects["classes"], ~known))
    return _select(objects, known)


def _mask_with_known_classes(mask, seg_num_classes: int, source_id) -> tf.Tensor:
    """The mask with classes outside 0..seg_num_classes - 1 set to the ignore label, logged."""
    unknown = (mask >= seg_num_classes) & (mask != IGNORE_LABEL)
    if tf.reduce_any(unknown):
        _log_warning_in_graph("image %s has mask classes outside 0 .. %s, ignored: %s", source_id,
                              seg_num_classes - 1, tf.unique(tf.boolean_mask(mask, unknown))[0])
    return tf.where(unknown, tf.constant(IGNORE_LABEL, tf.uint8), mask)
