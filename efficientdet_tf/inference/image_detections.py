"""One image's detections as the drawing modes keep and write them: those scoring at least the
drawing threshold, with their class names, as JSON records (`--mode=infer`'s
detections_by_image.json, `--mode=video`'s detections_by_frame.jsonl)."""

from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np

from efficientdet_tf.inference.detector import detections_from_dict
from efficientdet_tf.label_map import class_name


@dataclasses.dataclass(frozen=True)
class ImageDetections:
    """The kept detections of one image, best first.

    Attributes:
      boxes: float [N, 4] ymin, xmin, ymax, xmax in the image's pixels.
      scores: float [N].
      classes: int [N] 1-based class ids.
      class_names: the name of each detection's class (`label_map.class_name`).
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    class_names: tuple[str, ...]

    def records(self) -> list[dict]:
        """[{'box_yxyx', 'score', 'class_id', 'class_name'}, ...]: JSON-ready."""
        return [
            {"box_yxyx": box.tolist(), "score": float(score), "class_id": int(class_id),
             "class_name": name}
            for box, score, class_id, name in zip(self.boxes, self.scores, self.classes,
                                                  self.class_names)
        ]


def outputs_of_images(outputs: dict) -> list[dict[str, np.ndarray]]:
    """A runner's outputs for a batch of images -> the outputs of each image, as NumPy arrays."""
    arrays = {name: np.asarray(value) for name, value in outputs.items()}
    batch_size = len(next(iter(arrays.values())))
    return [{name: value[index] for name, value in arrays.items()} for index in range(batch_size)]


def kept_detections(image_outputs: dict, min_score: float,
                    names: Mapping[int, str]) -> ImageDetections:
    """The detections of one image's outputs (`outputs_of_images`) scoring at least
    `min_score`, named with `names` ({class id: name}, `label_map.class_names`)."""
    boxes, scores, classes, count = detections_from_dict(image_outputs)
    keep = (np.arange(len(scores)) < count) & (scores >= min_score)
    return ImageDetections(boxes[keep], scores[keep], classes[keep].astype(np.int64),
                           tuple(class_name(names, class_id) for class_id in classes[keep]))
