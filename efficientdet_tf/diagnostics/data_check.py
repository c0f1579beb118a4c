"""`check_data`: what a dataset holds and the labelling mistakes that train a model to 0 AP.

    report = check_data(config, "csv:boxes.csv:images", "check/", val_spec="...", num_images=16)

writes check/report.json (the returned dict), check/report.md, check/box_sizes.png and
check/samples/*.png (training samples after the training pre-processing and augmentation, see
`training_samples`). The report of the training data is at the top level of the dict; that of
the validation data, with the same keys, under 'validation'.

Likely mistakes found (`MISTAKES`, each with a warning sentence that names the fix):
  fraction_boxes      boxes within the first pixel of their image: fractions of the image size
                      in a format that expects pixels.
  pixel_boxes         boxes beyond the image in a format of fractions (TFRecords): pixels.
  too_small_boxes     boxes (fraction boxes aside) too small for any anchor shape to reach the
                      match threshold, however placed (`anchor_coverage`).
  case_variant_names  groups of class names that differ only in case or spaces.
  class_ids_above_num_classes  boxes whose class id is above config.num_classes (the pipeline
                      drops them).
  images_without_boxes
  class_imbalance     boxes of the most frequent class over those of the rarest, when above
                      `IMBALANCE_RATIO`.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from efficientdet_tf.anchors import Anchors
from efficientdet_tf.data.labeler import MATCH_THRESHOLD
from efficientdet_tf.data.pipeline import source_from_spec, with_class_names_of
from efficientdet_tf.data.sources.base import Source, TFRecordSource
from efficientdet_tf.data.sources.coco import CocoJsonSource
from efficientdet_tf.data.sources.mask_folder import MaskFolderSource
from efficientdet_tf.data.sources.named_boxes import NamedBoxesSource
from efficientdet_tf.diagnostics import anchor_coverage, box_sizes_plot, training_samples
from efficientdet_tf.label_map import class_name, class_names
from efficientdet_tf.output_files import write_file

DEFAULT_NUM_IMAGES = 16
# Boxes of the most frequent class per box of the rarest above which classes are "very unequal".
IMBALANCE_RATIO = 10.0
# A box coordinate this far beyond 1 in a format of fractions is taken for pixels.
_FRACTION_TOLERANCE = 0.01
MISTAKES = ("fraction_boxes", "pixel_boxes", "too_small_boxes", "case_variant_names",
            "class_ids_above_num_classes", "images_without_boxes", "class_imbalance")


@dataclasses.dataclass
class Boxes:
    """Every box of a dataset, one row each.

    Attributes:
      image_sizes: int [images, 2] height and width of each image in pixels.
      image_index: int [N] the image of each box (a row of image_sizes).
      normalized: float [N, 4] ymin, xmin, ymax, xmax as fractions of the image size.
      classes: int [N] class ids.
    """

    image_sizes: np.ndarray
    image_index: np.ndarray
    normalized: np.ndarray
    classes: np.ndarray

    @classmethod
    def read(cls, source: Source) -> "Boxes":
        """The boxes of every image `source` can decode, in order."""
        examples = source.examples(shuffle=False, repeat=False).map(
            lambda e: (tf.shape(e["image"])[:2], e["boxes"], e["classes"]))
        sizes, index, boxes, classes = [], [], [], []
        for image_number, (size, image_boxes, image_classes) in enumerate(
                examples.as_numpy_iterator()):
            sizes.append(size)
            index.append(np.full(len(image_boxes), image_number))
            boxes.append(image_boxes.reshape(-1, 4))
            classes.append(image_classes.reshape(-1))
        return cls(np.array(sizes, np.int64).reshape(-1, 2),
                   np.concatenate(index or [[]]).astype(np.int64),
                   np.concatenate(boxes or [np.zeros([0, 4])]).astype(np.float64),
                   np.concatenate(classes or [[]]).astype(np.int64))

    @property
    def pixels(self) -> np.ndarray:
        """[N, 4] in pixels of the original images."""
        return self.normalized * np.tile(self.image_sizes[self.image_index], 2)

    def at_input_size(self, image_size) -> np.ndarray:
        """[N, 4] in pixels of the network input, as evaluation resizes (keeping the aspect
        ratio, no jitter)."""
        sizes = self.image_sizes[self.image_index].astype(np.float64)
        scale = np.min(np.asarray(image_size, np.float64) / np.maximum(sizes, 1), axis=1)
        return self.pixels * scale[:, None]


def check_data(config, train_spec, output_dir: str | os.PathLike, *, val_spec=None,
               num_images: int = DEFAULT_NUM_IMAGES) -> dict:
    """Checks the training (and validation) data and writes the report, see the module
    docstring. `train_spec` and `val_spec` are dataset specs (`data.pipeline`) or `Source`s."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    source = source_from_spec(train_spec, config)
    names = source.class_names or class_names(config)
    anchors = Anchors.from_config(config)
    boxes = Boxes.read(source)
    report = dataset_report(boxes, names, config, anchors, _describe(train_spec))
    report["skipped"] = skipped(source, len(boxes.image_sizes))
    if val_spec is not None:
        val_source = source_from_spec(val_spec, _with_training_class_names(source, config))
        val_boxes = Boxes.read(val_source)
        report["validation"] = dataset_report(val_boxes, names, config, anchors,
                                              _describe(val_spec))
        report["validation"]["skipped"] = skipped(val_source, len(val_boxes.image_sizes))
    for name, text in (("report.json", json.dumps(report, indent=2) + "\n"),
                       ("report.md", markdown_report(report))):
        write_file(output_dir / name, text, "Data report")
    box_sizes_plot.plot_box_sizes(boxes.at_input_size(config.image_size), anchors,
                                  output_dir / "box_sizes.png")
    if num_images:
        training_samples.write_samples(source, config, names, num_images,
                                       output_dir / "samples")
    return report


def _with_training_class_names(source: Source, config):
    """The config that training gives the validation data: the training data's class names as
    its label map (`voc:` and `csv:` names then get the same ids), when they fit num_classes."""
    if source.max_class_id is not None and source.max_class_id > config.num_classes:
        return config  # the report names the ids above num_classes
    return with_class_names_of(source, config)


def _describe(spec) -> str:
    return spec if isinstance(spec, str) else type(spec).__name__


def dataset_report(boxes: Boxes, names: dict[int, str], config, anchors: Anchors,
                   description: str) -> dict:
    """Counts and likely mistakes of one dataset (`skipped` aside, which needs its source)."""
    input_boxes = boxes.at_input_size(config.image_size)
    best_iou = anchor_coverage.best_anchor_iou(input_boxes, anchors)
    fraction = _fraction_boxes(boxes)
    sizes = np.stack([input_boxes[:, 2] - input_boxes[:, 0],
                      input_boxes[:, 3] - input_boxes[:, 1]], axis=1)
    too_small = ~fraction & (anchor_coverage.best_centred_iou(sizes, anchors) < MATCH_THRESHOLD)
    per_class = _per_class(boxes, names, best_iou, too_small, sizes)
    counts = [row["boxes"] for row in per_class]
    mistakes = {
        "fraction_boxes": int(fraction.sum()),
        "pixel_boxes": int(np.any(boxes.normalized > 1 + _FRACTION_TOLERANCE, axis=1).sum()),
        "too_small_boxes": int(too_small.sum()),
        "case_variant_names": case_variant_names(names),
        "class_ids_above_num_classes": int((boxes.classes > config.num_classes).sum()),
        "images_without_boxes": int(len(boxes.image_sizes)
                                    - len(np.unique(boxes.image_index))),
        "class_imbalance": round(max(counts) / min(counts), 1) if len(counts) > 1 else 1.0,
    }
    report = {
        "dataset": description,
        "images": int(len(boxes.image_sizes)),
        "boxes": int(len(boxes.classes)),
        "boxes_per_class": {row["name"]: row["boxes"] for row in per_class},
        "weakly_matched_boxes": int(anchor_coverage.is_weakly_matched(best_iou).sum()),
        "match_threshold": MATCH_THRESHOLD,
        "network_input_size": list(anchors.image_size),
        "num_classes": config.num_classes,
        "per_class": per_class,
        "mistakes": mistakes,
    }
    report["warnings"] = warnings(report, anchors)
    return report


def _fraction_boxes(boxes: Boxes) -> np.ndarray:
    """Boxes that end within the first pixel of an image larger than a pixel."""
    pixels = boxes.pixels
    larger = np.all(boxes.image_sizes[boxes.image_index] > 1, axis=1)
    return larger & (pixels[:, 2] <= 1) & (pixels[:, 3] <= 1)


def _per_class(boxes, names, best_iou, too_small, sizes) -> list[dict]:
    rows = []
    for class_id in sorted(set(boxes.classes.tolist())):
        of_class = boxes.classes == class_id
        side = np.sqrt(np.prod(np.maximum(sizes[of_class], 0), axis=1))
        rows.append({
            "id": int(class_id),
            "name": class_name(names, class_id) if names else str(class_id),
            "boxes": int(of_class.sum()),
            "images": int(len(np.unique(boxes.image_index[of_class]))),
            "weakly_matched": int(anchor_coverage.is_weakly_matched(best_iou[of_class]).sum()),
            "too_small": int(too_small[of_class].sum()),
            "median_size": round(float(np.median(side)), 1),
        })
    return rows


def case_variant_names(names: dict[int, str]) -> list[list[str]]:
    """Groups of class names that are the same once lower-cased and without spaces."""
    groups = collections.defaultdict(list)
    for name in names.values():
        groups["".join(name.split()).lower()].append(name)
    return [sorted(group) for _, group in sorted(groups.items()) if len(group) > 1]


def skipped(source: Source, images_read: int) -> dict[str, dict[str, int]]:
    """What the reader left out: {'images': {reason: count}, 'boxes': {reason: count}}."""
    images, boxes = collections.Counter(), collections.Counter()
    if isinstance(source, (NamedBoxesSource, MaskFolderSource)):
        images.update({reason: len(items) for reason, items in source.skipped.by_reason.items()})
    if isinstance(source, NamedBoxesSource):
        boxes.update(source.box_changes)
    if isinstance(source, CocoJsonSource):
        images["image file missing"] += len(source.coco.images) - len(source.images)
    listed = source.num_examples
    if isinstance(source, TFRecordSource):
        listed = source.count_examples()
    if listed is not None:
        images["image could not be decoded"] += listed - images_read
    return {"images": dict(+images), "boxes": dict(+boxes)}


def warnings(report: dict, anchors: Anchors) -> list[str]:
    """One sentence per likely mistake: what, how many, and the fix."""
    mistakes, found = report["mistakes"], []
    smallest = float(np.sqrt(np.prod(anchor_coverage.anchor_shapes(anchors)[anchors.min_level],
                                      axis=1)).min())
    if mistakes["fraction_boxes"]:
        found.append(
            f"{mistakes['fraction_boxes']} boxes end within the first pixel of their image: "
            "their coordinates look like fractions of the image size in a format that expects "
            "pixels; multiply them by the image width and height (or use a format of "
            "fractions, such as the AutoML CSV form).")
    if mistakes["pixel_boxes"]:
        found.append(
            f"{mistakes['pixel_boxes']} boxes reach beyond their image in a format of fractions "
            "of the image size: they look like pixels; divide them by the image width and "
            "height. Check also that x and y are not swapped.")
    if mistakes["too_small_boxes"]:
        found.append(
            f"{mistakes['too_small_boxes']} boxes are too small for any anchor to reach IoU "
            f"{MATCH_THRESHOLD} with them at the network input size "
            f"{anchors.image_size[0]}x{anchors.image_size[1]} (smallest anchor "
            f"{smallest:.0f} px); they train only through forced matching: raise image_size, "
            "or lower anchor_scale or min_level.")
    for group in mistakes["case_variant_names"]:
        counts = report["boxes_per_class"]
        spelled = ", ".join(f"{name!r} ({counts.get(name, 0)} boxes)" for name in group)
        found.append(f"The class names {spelled} differ only in case or spaces and are "
                     "trained as different classes: spell them one way.")
    if mistakes["class_ids_above_num_classes"]:
        found.append(
            f"{mistakes['class_ids_above_num_classes']} boxes have class ids above "
            f"num_classes={report['num_classes']} and are dropped in training: raise num_classes "
            "to the largest class id (ids are 1-based).")
    if mistakes["images_without_boxes"]:
        found.append(
            f"{mistakes['images_without_boxes']} of {report['images']} images have no box: "
            "they train as pure background; check that their annotations were not lost.")
    if mistakes["class_imbalance"] > IMBALANCE_RATIO:
        rows = sorted(report["per_class"], key=lambda row: row["boxes"])
        found.append(
            f"The classes are very unequal: {rows[-1]['name']!r} has "
            f"{mistakes['class_imbalance']:g} times the boxes of {rows[0]['name']!r} "
            f"({rows[-1]['boxes']} against {rows[0]['boxes']}): label more of the rare classes "
            "or expect a low AP on them.")
    return found


def markdown_report(report: dict) -> str:
    """The report for people: the training data, then the validation data."""
    sections = [_markdown_section("Training data", report)]
    if "validation" in report:
        sections.append(_markdown_section("Validation data", report["validation"]))
    return "# Data check\n\n" + "\n".join(sections)


def _markdown_section(title: str, report: dict) -> str:
    height, width = report["network_input_size"]
    lines = [
        f"## {title}: `{report['dataset']}`", "",
        f"{report['images']} images, {report['boxes']} boxes; "
        f"{report['weakly_matched_boxes']} boxes weakly matched (best anchor IoU below "
        f"{report['match_threshold']} at the network input size {height}x{width}).", "",
        "### Warnings", "",
    ]
    lines += [f"- {warning}" for warning in report["warnings"]] or ["None."]
    lines += ["", "### Classes", "",
              "| id | class | boxes | images | weakly matched | too small "
              "| median √(h·w) at input (px) |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {row['id']} | {row['name']} | {row['boxes']} | {row['images']} | "
              f"{row['weakly_matched']} | {row['too_small']} | {row['median_size']} |"
              for row in report["per_class"]]
    lines += ["", "### Skipped by the reader", ""]
    skipped_lines = [f"- {kind}: {count} {reason}"
                     for kind, reasons in report.get("skipped", {}).items()
                     for reason, count in reasons.items()]
    lines += skipped_lines or ["Nothing."]
    return "\n".join(lines) + "\n"
