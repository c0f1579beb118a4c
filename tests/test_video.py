"""`--mode=video` and `ObjectDetector.predict_video`: a clip of synthetic frames in, the same clip
with its detections drawn out, each frame's detections those of `--mode=infer` on its pixels.

The model is the shared exported set's checkpoint (`exported_files.py`: 128 px, both heads, spread
scores), run in process (`cli_in_process.run_cli`)."""

import json

import cv2
import numpy as np
import pytest
from cli_in_process import run_cli
from detection_matching import match_detections
from exported_files import shared_config
from PIL import Image

from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.inference.image_detections import kept_detections, outputs_of_images
from efficientdet_tf.label_map import class_names
from efficientdet_tf.object_detector import ObjectDetector

FRAME_RATE = 12.5
FRAME_SIZE = (160, 120)  # width, height: not the network's 128 x 128
# All 100 detections of each frame: spread scores are around 0.01 on these images.
MIN_SCORE = "0"


def write_clip(path, num_frames, codec="mp4v"):
    """A video of synthetic shape images, one per frame."""
    width, height = FRAME_SIZE
    shapes = SyntheticShapes(num_frames, (height, width), seed=4)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), FRAME_RATE, FRAME_SIZE)
    for index in range(num_frames):
        writer.write(np.ascontiguousarray(shapes.render(index)[..., ::-1]))
    writer.release()
    return path


def decoded_frames(path):
    """The frames OpenCV decodes from `path`, RGB, and its frame rate and size."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read()[1]) is not None:
        frames.append(frame[..., ::-1])
    properties = (capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
                  int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    capture.release()
    return frames, properties


def block_means(image, block=8):
    """The mean of each block x block square of an [H, W, 3] image."""
    height, width = image.shape[0] // block, image.shape[1] // block
    return np.asarray(image, np.float32).reshape(height, block, width, block, 3).mean((1, 3))


def cli(capfd, *args):
    """`efficientdet *args` in process: (exit status, stdout, stderr)."""
    capfd.readouterr()
    status = run_cli(*args)
    printed = capfd.readouterr()
    return status, printed.out, printed.err


@pytest.fixture(scope="module")
def model_flags(exported_files, tmp_path_factory):
    config_file = tmp_path_factory.mktemp("config") / "config.yaml"
    shared_config().save(config_file)
    return f"--model_name={config_file}", f"--ckpt={exported_files['checkpoint']}"


def assert_same_detections(found, expected):
    """Two lists of detection records of one image are the same set (near ties may come in
    another order, `detection_matching`): classes and names equal, scores within 1e-4, boxes
    within 1 pixel."""
    found_set, expected_set = (
        (np.reshape([d["box_yxyx"] for d in records], (-1, 4)),
         np.array([d["score"] for d in records]),
         np.array([f"{d['class_id']} {d['class_name']}" for d in records]))
        for records in (found, expected))
    match = match_detections(expected_set, found_set, score_tolerance=1e-4, min_iou=0.5)
    assert match.num_matched == len(found) == len(expected)
    rows, columns = (list(index) for index in zip(*match.pairs))
    np.testing.assert_allclose(found_set[0][columns], expected_set[0][rows], atol=1)


def test_video_keeps_count_size_and_rate_and_detects_each_frame_as_infer(
        model_flags, tmp_path, capfd):
    clip = write_clip(tmp_path / "clip.mp4", num_frames=7)
    status, out, err = cli(capfd, "--mode=video", *model_flags, f"--input_video={clip}",
                           f"--output_video={tmp_path / 'drawn.avi'}",
                           f"--output_dir={tmp_path / 'out'}", "--batch_size=3",
                           f"--min_score_thresh={MIN_SCORE}")
    assert status == 0, err[-3000:]
    assert "7 frames" in out and "frames per second" in out

    frames, properties = decoded_frames(clip)
    drawn, drawn_properties = decoded_frames(tmp_path / "drawn.avi")
    assert len(drawn) == len(frames) == 7
    assert drawn_properties == properties == (FRAME_RATE, *FRAME_SIZE)
    lines = (tmp_path / "out" / "detections_by_frame.jsonl").read_text().splitlines()
    by_frame = [json.loads(line) for line in lines]
    assert [frame["frame"] for frame in by_frame] == list(range(7))
    np.testing.assert_allclose([frame["time"] for frame in by_frame],
                               np.arange(7) / FRAME_RATE)

    frame_dir = tmp_path / "frames"
    frame_dir.mkdir()
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(frame_dir / f"{index}.png")
    status, _, err = cli(capfd, "--mode=infer", *model_flags, f"--input_image={frame_dir}/*.png",
                         f"--output_image_dir={tmp_path / 'infer'}",
                         f"--min_score_thresh={MIN_SCORE}")
    assert status == 0, err[-3000:]
    by_image = json.loads((tmp_path / "infer" / "detections_by_image.json").read_text())
    assert all(len(frame["detections"]) == 100 for frame in by_frame)
    for frame in by_frame:
        assert_same_detections(frame["detections"],
                               by_image[str(frame_dir / f"{frame['frame']}.png")])
    # The drawing is infer's, up to MJPG's losses (in the fine detail: compared in 8x8 blocks;
    # the drawn frame is about 50 from the frame itself).
    infer_drawing = np.asarray(Image.open(tmp_path / "infer" / "3.png"))
    assert np.abs(block_means(drawn[3]) - block_means(infer_drawing)).mean() < 6


def test_a_frame_that_does_not_decode_ends_the_video_with_a_warning(
        model_flags, tmp_path, capfd, caplog):
    clip = write_clip(tmp_path / "clip.avi", num_frames=8, codec="MJPG")
    data = clip.read_bytes()
    clip.write_bytes(data[:len(data) // 2])  # the header still says 8 frames
    status, out, err = cli(capfd, "--mode=video", *model_flags, f"--input_video={clip}",
                           f"--output_video={tmp_path / 'drawn.mp4'}",
                           f"--output_dir={tmp_path}", f"--min_score_thresh={MIN_SCORE}")
    assert status == 1, err[-3000:]
    written, _ = decoded_frames(tmp_path / "drawn.mp4")
    lines = (tmp_path / "detections_by_frame.jsonl").read_text().splitlines()
    assert 0 < len(written) == len(lines) < 8
    assert (f"frame {len(written) + 1} of 8 could not be decoded; the video ends there, "
            f"{len(written)} frames written") in caplog.text
    assert f"{len(written)} frames" in out


@pytest.mark.parametrize("problem, args, message", [
    ("missing", ("--input_video={tmp}/none.mp4",), "Video {tmp}/none.mp4 does not exist"),
    ("not a video", ("--input_video={tmp}/text.mp4",),
     "Video {tmp}/text.mp4 cannot be read by OpenCV"),
    ("codec", ("--input_video={tmp}/clip.mp4", "--output_video={tmp}/out.mkv"),
     "Output video {tmp}/out.mkv: OpenCV writes .mp4 (mp4v), .avi (MJPG) here"),
    ("no input", (), "--mode=video needs --input_video"),
    ("no detection head", ("--input_video={tmp}/clip.mp4", "--hparams=heads=segmentation"),
     "--mode=video draws detections, and this model has no detection head"),
])
def test_bad_video_arguments_are_one_line_naming_the_file(
        problem, args, message, tmp_path, capfd):
    write_clip(tmp_path / "clip.mp4", num_frames=1)
    (tmp_path / "text.mp4").write_text("not a video")
    status, _, err = cli(capfd, "--mode=video", "--ckpt=unused",
                         *(arg.format(tmp=tmp_path) for arg in args))
    assert status == 2
    assert f"error: {message.format(tmp=tmp_path)}" in err
    assert "Traceback" not in err
    assert not list(tmp_path.glob("out*"))


def test_predict_video_yields_the_detections_of_predict_and_writes_only_when_done(tmp_path):
    detector = ObjectDetector(shared_config())
    clip = write_clip(tmp_path / "clip.mp4", num_frames=3)
    frames, _ = decoded_frames(clip)
    expected = outputs_of_images(detector.predict(np.stack(frames), batch_size=2))
    names = class_names(detector.config)

    output = tmp_path / "drawn.mp4"
    found = list(detector.predict_video(clip, output, batch_size=2, min_score=0.0))
    assert [frame.index for frame in found] == [0, 1, 2]
    for frame, outputs in zip(found, expected):
        assert frame.time == frame.index / FRAME_RATE
        assert_same_detections(frame.detections.records(),
                               kept_detections(outputs, 0.0, names).records())
    assert len(frame.detections.scores) == 100  # random weights: every row scores above 0
    assert len(decoded_frames(output)[0]) == 3

    output.unlink()
    next(iter(detector.predict_video(clip, output)))  # stopped after one frame
    assert not list(tmp_path.glob("*drawn*"))
