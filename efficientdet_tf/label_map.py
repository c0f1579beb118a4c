"""Class names. Label maps {class id: class name}: the config's `label_map`, given as the mapping
itself, a YAML / JSON file, or the built-in 'coco', 'voc' and 'synthetic' (the demo dataset's
shapes); `class_names` gives a model's names to every consumer (drawing, the detections JSON,
TFLite label files, evaluation's per-class metric names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import yaml

from efficientdet_tf.output_files import write_file

# The shapes of the built-in synthetic dataset (data/synthetic.py draws them).
SYNTHETIC_CLASS_NAMES = {1: "circle", 2: "square", 3: "triangle"}
# Pascal VOC class names with their official ids 1..20.
VOC_CLASS_NAMES = {
    i + 1: name
    for i, name in enumerate((
        "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
        "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
        "train", "tvmonitor",
    ))
}


# COCO 2017 detection categories with their official ids 1..90 (80 ids used).
COCO_CLASS_NAMES = dict(enumerate((
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", None, "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", None, "backpack",
    "umbrella", None, None, "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", None, "wine glass", "cup", "fork", "knife", "spoon", "bowl",
    "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut",
    "cake", "chair", "couch", "potted plant", "bed", None, "dining table", None, None, "toilet",
    None, "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven",
    "toaster", "sink", "refrigerator", None, "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
), start=1))
COCO_CLASS_NAMES = {class_id: name for class_id, name in COCO_CLASS_NAMES.items() if name}
BUILT_IN_LABEL_MAPS = {
    "coco": COCO_CLASS_NAMES,
    "voc": VOC_CLASS_NAMES,
    "synthetic": SYNTHETIC_CLASS_NAMES,
}


def class_names(config) -> dict[int, str]:
    """{class id: name} of the classes of a model of `config` (its `label_map` and `num_classes`):
    the label map; COCO's names for a model with COCO's 90 class ids and no label map (the official
    checkpoints, whose names the official code draws); else empty (see `class_name`)."""
    if config.label_map:
        return read_label_map(config.label_map)
    return dict(COCO_CLASS_NAMES) if config.num_classes == max(COCO_CLASS_NAMES) else {}


def class_name(names: Mapping[int, str], class_id: int) -> str:
    """The name of `class_id` in `names` (from `class_names`), else 'class <id>'."""
    return names.get(int(class_id), f"class {int(class_id)}")


def read_label_map(spec: str | Path | Mapping) -> dict[int, str]:
    """'coco', 'voc', 'synthetic', a YAML / JSON file of {id: name}, or such a mapping itself
    -> {int id: name}."""
    if isinstance(spec, Mapping):
        return check_label_map(spec, "The label map")
    if str(spec) in BUILT_IN_LABEL_MAPS:
        return dict(BUILT_IN_LABEL_MAPS[str(spec)])
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(
            f"Label map {str(spec)!r} is neither one of {', '.join(BUILT_IN_LABEL_MAPS)} nor an "
            "existing YAML / JSON file of {id: name}."
        )
    text = path.read_text()
    mapping = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return check_label_map(mapping, f"Label map {path}")


def check_label_map(mapping, what: str) -> dict[int, str]:
    """{int id >= 1: distinct non-empty name}, sorted by id, from a mapping whose ids may be digit
    strings (JSON keys); raises ValueError starting with `what` otherwise."""
    try:
        label_map = {int(class_id): name.strip() for class_id, name in mapping.items()
                     if isinstance(name, str)}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"{what} must map integer class ids to names, got {mapping!r}.") from None
    if len(label_map) != len(mapping) or not all(label_map.values()):
        raise ValueError(f"{what}: every class id needs a non-empty name, got {mapping!r}.")
    if min(label_map, default=1) < 1:
        raise ValueError(f"{what}: class ids start at 1 (0 is the background).")
    if len(set(label_map.values())) != len(label_map):
        raise ValueError(f"{what} gives one name to several class ids: {mapping!r}.")
    return dict(sorted(label_map.items()))


def write_label_map(label_map: dict[int, str], path: str | Path) -> None:
    """Writes {id: name} as YAML, readable by `read_label_map` and as the config's label_map."""
    write_file(path, yaml.safe_dump(dict(sorted(label_map.items())), sort_keys=False),
               "Label map")
