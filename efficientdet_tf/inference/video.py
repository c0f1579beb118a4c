"""Detections on every frame of a video (`--mode=video`, `ObjectDetector.predict_video`).

    video = VideoDetection('clip.mp4', class_names(config), output_video='drawn.mp4')
    for frame in video.run(open_detector('runs/demo', config)):
        frame.index, frame.time, frame.detections.boxes, ...

Frames are read with OpenCV and detected in batches by any runner (an `ImageDetector`'s
`__call__`: a checkpoint's, a SavedModel's, a TFLite, ONNX or OpenVINO file's), so each frame's
detections are those `--mode=infer` finds in the same pixels. They can be drawn as infer draws
them into a video of the input's frame rate and size (the codec chosen by the output's
extension, `CODECS`), and written as JSON lines, one per frame. Both outputs are written whole
(`output_files.written_whole`): a run that stops early leaves neither.

OpenCV comes from `opencv-contrib-python`, the package MediaPipe (the `tflite` extra) requires;
the `video` extra installs it alone. A second cv2 package such as `opencv-python-headless` would
overwrite the same `cv2` module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, Iterator, Mapping

import keras
import numpy as np

from efficientdet_tf.errors import ConfigError
from efficientdet_tf.inference.detector import ImageDetector
from efficientdet_tf.inference.draw import DEFAULT_MIN_SCORE, draw_outputs
from efficientdet_tf.inference.image_detections import (
    ImageDetections,
    kept_detections,
    outputs_of_images,
)
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS
from efficientdet_tf.output_files import written_whole

log = logging.getLogger(__name__)

VIDEO_EXTRA = 'pip install "efficientdet_tf[video]"'
# The codec of each output extension: ones every OpenCV build's FFmpeg writes.
CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
# Frames per call of the runner: enough to fill a CPU's or GPU's batch, few enough that the
# first drawn frames come at once.
DEFAULT_BATCH_SIZE = 8


def import_opencv():
    """The `cv2` module, or a `ConfigError` that names the package to install."""
    try:
        import cv2  # noqa: PLC0415 (optional: only video needs it)
    except ImportError:
        raise ConfigError(f"Video needs OpenCV, which is not installed: {VIDEO_EXTRA} (or "
                          "pip install opencv-contrib-python, the cv2 package MediaPipe "
                          "uses).") from None
    return cv2


@dataclasses.dataclass(frozen=True)
class FrameDetections:
    """The detections of one frame: its index (from 0), its time in seconds from the start
    (index / frame rate), and what scored at least the threshold."""

    index: int
    time: float
    detections: ImageDetections

    def as_json(self) -> dict:
        """{'frame', 'time', 'detections': [{'box_yxyx', 'score', 'class_id', 'class_name'}]}."""
        return {"frame": self.index, "time": round(self.time, 6),
                "detections": self.detections.records()}


class VideoReader:
    """A video file's frames (uint8 RGB [height, width, 3]) and properties, read with OpenCV."""

    def __init__(self, path: str | os.PathLike):
        self._cv2 = import_opencv()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise ConfigError(f"Video {self.path} does not exist: give the path of a video file.")
        self._capture = self._cv2.VideoCapture(self.path)
        if not self._capture.isOpened():
            raise ConfigError(f"Video {self.path} cannot be read by OpenCV: not a video, damaged, "
                              "or in a codec its FFmpeg lacks.")
        self.fps = self._capture.get(self._cv2.CAP_PROP_FPS)
        if not self.fps > 0:
            raise ConfigError(f"Video {self.path} gives no frame rate: convert it to .mp4 first "
                              "(e.g. with ffmpeg).")
        self.size = (int(self._capture.get(self._cv2.CAP_PROP_FRAME_WIDTH)),
                     int(self._capture.get(self._cv2.CAP_PROP_FRAME_HEIGHT)))
        #: The frame count its container gives (None when it gives none).
        self.frame_count = int(self._capture.get(self._cv2.CAP_PROP_FRAME_COUNT)) or None
        self.frames_read = 0

    def frames(self) -> Iterator[np.ndarray]:
        """Each frame in order, until the end or the first that fails to decode."""
        while True:
            try:
                read, frame = self._capture.read()
            except self._cv2.error:
                read = False
            if not read:
                self._capture.release()
                return
            self.frames_read += 1
            yield np.ascontiguousarray(frame[..., ::-1])  # OpenCV's BGR

    @property
    def cut_short(self) -> bool:
        """Whether reading stopped before the frame count of the container: a frame failed."""
        return self.frame_count is not None and self.frames_read < self.frame_count


class VideoDetection:
    """The detection of one video: the input and outputs are checked when it is made, before a
    model is loaded; `run(detector)` reads, detects, draws and writes.

    Args:
      video_path: the video file to read.
      names: {class id: name} of the model's classes (`label_map.class_names`).
      output_video: where to write the frames with their detections drawn (.mp4 or .avi).
      detections_file: where to write each frame's detections as a JSON line
        (`FrameDetections.as_json`).
      batch_size: frames per call of the runner.
      min_score: the detections scoring lower are neither yielded, drawn nor written.
      progress: show a progress bar with the frames per second.
    """

    def __init__(self, video_path: str | os.PathLike, names: Mapping[int, str], *,
                 output_video: str | os.PathLike | None = None,
                 detections_file: str | os.PathLike | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, min_score: float = DEFAULT_MIN_SCORE,
                 progress: bool = False):
        if batch_size < 1:
            raise ConfigError(f"The batch size of video detection must be at least 1, got "
                              f"{batch_size}.")
        self.video = VideoReader(video_path)
        self.codec = output_codec(output_video) if output_video is not None else None
        self.output_video = output_video
        self.detections_file = detections_file
        self.names = dict(names)
        self.batch_size = batch_size
        self.min_score = min_score
        self.progress = progress
        self.frames_done = 0
        self.seconds = 0.0

    @property
    def frames_per_second(self) -> float:
        """Frames done per second of `run` so far: reading, detecting, drawing and writing."""
        return self.frames_done / self.seconds if self.seconds else 0.0

    def run(self, detector: ImageDetector) -> Iterator[FrameDetections]:
        """Detects every frame with `detector` (uint8 frames [batch, height, width, 3] -> its
        outputs), writing the outputs as it goes; yields each frame's detections."""
        progress = (keras.utils.Progbar(self.video.frame_count, unit_name="frame",
                                        stateful_metrics=["fps"]) if self.progress else None)
        start = time.perf_counter()
        with contextlib.ExitStack() as outputs:
            write_frame = (outputs.enter_context(self._video_writer())
                           if self.output_video is not None else None)
            lines = (outputs.enter_context(_json_lines(self.detections_file))
                     if self.detections_file is not None else None)
            for frames in _batches(self.video.frames(), self.batch_size):
                results = outputs_of_images(detector(np.stack(frames)))
                for frame, image_outputs in zip(frames, results):
                    found = FrameDetections(self.frames_done, self.frames_done / self.video.fps,
                                            kept_detections(image_outputs, self.min_score,
                                                            self.names))
                    if write_frame is not None:
                        write_frame(draw_outputs(frame, found.detections,
                                                 image_outputs.get(SEGMENTATION_MASKS),
                                                 self.names))
                    if lines is not None:
                        lines.write(json.dumps(found.as_json()) + "\n")
                    self.frames_done += 1
                    yield found
                self.seconds = time.perf_counter() - start
                if progress is not None:
                    progress.update(self.frames_done, [("fps", self.frames_per_second)])
            if self.video.cut_short:
                log.warning("%s: frame %d of %d could not be decoded; the video ends there, %d "
                            "frames written.", self.video.path, self.frames_done + 1,
                            self.video.frame_count, self.frames_done)

    @contextlib.contextmanager
    def _video_writer(self) -> Iterator[Callable[[np.ndarray], None]]:
        """A function that appends an RGB frame to the output video, written whole."""
        cv2 = import_opencv()
        with written_whole(self.output_video, "Video") as partial:
            writer = cv2.VideoWriter(partial, cv2.VideoWriter_fourcc(*self.codec),
                                     self.video.fps, self.video.size)
            if not writer.isOpened():
                raise ConfigError(f"OpenCV cannot write the {self.codec} codec to "
                                  f"{self.output_video}: its FFmpeg lacks it; try "
                                  f"{' or '.join(CODECS)}.")
            try:
                yield lambda frame: writer.write(np.ascontiguousarray(np.asarray(frame)[..., ::-1]))
            finally:
                writer.release()


def output_codec(path: str | os.PathLike) -> str:
    """The codec of an output video, by its extension; a `ConfigError` for another one."""
    suffix = Path(path).suffix.lower()
    if suffix not in CODECS:
        raise ConfigError(f"Output video {os.fspath(path)}: OpenCV writes "
                          f"{', '.join(f'{s} ({c})' for s, c in CODECS.items())} here; give "
                          "the file one of those extensions.")
    return CODECS[suffix]


@contextlib.contextmanager
def _json_lines(path: str | os.PathLike):
    """A text file for JSON lines, written whole."""
    with written_whole(path, "Detections") as partial, open(partial, "w") as file:
        yield file


def _batches(items: Iterator, size: int) -> Iterator[list]:
    """Lists of `size` consecutive items (the last may be shorter)."""
    while batch := list(itertools.islice(items, size)):
        yield batch
