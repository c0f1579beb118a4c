"""`--mode=video`: detections on every frame of --input_video, drawn into --output_video.

The official `inspector.py --mode=video` with the model flags of `--mode=infer`: --ckpt, or
--saved_model_dir (a SavedModel directory, or a .tflite, .onnx or OpenVINO .xml file), and its
--min_score_thresh (defined in `infer`). Frames go to the runner --batch_size at a time
(`DEFAULT_BATCH_SIZE` unless the flag is given). --output_video keeps the input's frame rate and
size (.mp4 or .avi); --output_dir gets the detections of every frame as JSON lines. With
neither, only the counts are printed (no window is opened). A video cut short by a frame that
does not decode is written up to there, and the command exits with status 1.
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import flags

from efficientdet_tf.cli.common import config_from_flags
from efficientdet_tf.cli.detection_flags import flagged_detector
from efficientdet_tf.config import ConfigError
from efficientdet_tf.inference.video import DEFAULT_BATCH_SIZE, VideoDetection
from efficientdet_tf.label_map import class_names
from efficientdet_tf.output_files import require_writable_folder

DETECTIONS_FILE_NAME = "detections_by_frame.jsonl"

flags.DEFINE_string("input_video", None, "--mode=video: the video file to detect in.")
flags.DEFINE_string("output_video", None,
                    "--mode=video: where the video with the detections drawn goes (.mp4 or .avi: "
                    "the extension picks the codec); the input's frame rate and size.")


def run(flag_values) -> None:
    if not flag_values.input_video:
        raise ConfigError("--mode=video needs --input_video, a video file such as clip.mp4.")
    config = config_from_flags(flag_values)
    if "object_detection" not in config.heads:
        raise ConfigError("--mode=video draws detections, and this model has no detection head "
                          "(hparam heads).")
    output_dir = flag_values.output_dir
    if flag_values.output_video:
        require_writable_folder(Path(flag_values.output_video).parent, "--output_video")
    if output_dir:
        require_writable_folder(output_dir, "--output_dir")
    video = VideoDetection(
        flag_values.input_video, class_names(config), output_video=flag_values.output_video,
        detections_file=Path(output_dir) / DETECTIONS_FILE_NAME if output_dir else None,
        batch_size=(flag_values.batch_size if flag_values["batch_size"].present
                    else DEFAULT_BATCH_SIZE),
        min_score=flag_values.min_score_thresh, progress=True)
    detector = flagged_detector(flag_values, config, "--mode=video")
    detections = sum(len(frame.detections.scores) for frame in video.run(detector))
    written = [path for path in (flag_values.output_video, video.detections_file) if path]
    print(f"{video.frames_done} frames, {detections} detections, "
          f"{video.frames_per_second:.1f} frames per second"
          + (f"; written to {' and '.join(map(str, written))}" if written else ""))
    if video.video.cut_short:
        sys.exit(1)
