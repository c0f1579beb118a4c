"""The order of the detection outputs of TFLite files, shared by the exporter and the runner.

TFLite's detection post-processing op gives boxes, classes, scores and count. Files that take raw
pixels keep that order, which TF Hub's EfficientDet-Lite files, the Task Library and MediaPipe use.
Files in the official automl layout (normalized image in) reverse it, as the official exporter
does (`postprocess_tflite` returns the op's outputs `[::-1]`) and its `eval_tflite` reads them:
count, scores, classes, boxes. Signature outputs are named output_0, output_1, ... in file order.
A reader tells the two apart by the shape of the first output: the count [1] or the boxes
[1, N, 4].
"""

from __future__ import annotations

from typing import Sequence

# What the op gives, and what pixel-input files return.
TASK_LIBRARY_ORDER = ("boxes", "classes", "scores", "count")
# What the official automl export returns: num_detections, scores, classes, boxes.
OFFICIAL_ORDER = TASK_LIBRARY_ORDER[::-1]


def output_order_from_shape(first_output_shape: Sequence[int]) -> tuple[str, ...]:
    """The order of a file's four detection outputs, from the shape of its first output."""
    if len(first_output_shape) == 1:
        return OFFICIAL_ORDER
    if len(first_output_shape) == 3 and first_output_shape[-1] == 4:
        return TASK_LIBRARY_ORDER
    raise ValueError(
        f"The TFLite file's first output has shape {list(first_output_shape)}: a detection file "
        "starts with the count [1] (official automl order) or the boxes [1, N, 4] (Task Library "
        "order). Is it a file that `export_tflite` wrote with the detection head?"
    )
