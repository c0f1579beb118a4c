"""ONNX files (ONNX Runtime) and OpenVINO IRs (OpenVINO) give the checkpoint's detections.

The ONNX file runs ONNX's own hard NMS: its detections are those of the network with
nms_configs.method=hard. The OpenVINO IR runs the config's soft-NMS: the network's default
detections. A detection matches when the class is equal, the score within 1e-3 and the box IoU at
least 0.99; every detection must match, and the counts must be equal. The model has both heads:
the segmentation masks must be equal too.
"""

import re
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from cli_in_process import run_cli
from detection_matching import match_detections
from exported_files import SHARED

from efficientdet_tf.anchors import decode_boxes
from efficientdet_tf.config import get_config
from efficientdet_tf.data.preprocess import preprocess_images
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.errors import ConfigError
from efficientdet_tf.export.formats import export_formats
from efficientdet_tf.export.onnx import export_onnx, hard_nms_config
from efficientdet_tf.export.openvino_int8 import quantized_ir
from efficientdet_tf.inference.detector import Detector, detections_from_dict
from efficientdet_tf.inference.loading import open_detector, open_exported
from efficientdet_tf.inference.postprocess import Postprocessor
from efficientdet_tf.inference.runtime_detector import MissingRuntimeError, open_onnx
from efficientdet_tf.inference.segmentation_masks import SEGMENTATION_MASKS
from efficientdet_tf.model.builder import model_outputs

# OpenVINO's convolution ops (the segmentation head ends in a transposed one).
CONVOLUTIONS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData")
IMAGES = {"batch of 2": (2, 100, 150), "tall": (1, 120, 70)}  # another size than the network's


@pytest.fixture(scope="module")
def network(shared_network):
    """The shared exported set's network (`exported_files.py`): both heads, spread scores."""
    return shared_network


@pytest.fixture(scope="module")
def exported(exported_files):
    return {"onnx": exported_files["onnx"], "openvino": exported_files["openvino"]}


@pytest.fixture(scope="module")
def onnx_pre_nms(network, tmp_path_factory):
    """Its own export: the ONNX file without NMS (--onnx_nms=false)."""
    model, config = network
    return export_onnx(model, config, tmp_path_factory.mktemp("deploy") / "pre_nms.onnx",
                       nms=False)


def images(name: str) -> np.ndarray:
    batch, height, width = {**IMAGES, "network size": (2, 128, 128)}[name]
    source = SyntheticShapes(batch, (height, width), seed=5)
    return np.stack([source.render(i) for i in range(batch)])


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_exported_files_give_the_checkpoints_detections(network, exported, kind):
    model, config = network
    reference_config = hard_nms_config(config) if kind == "onnx" else config
    reference = tf.function(Detector(reference_config, model))
    runner = open_exported(exported[kind], config)
    for name in IMAGES:
        assert_same_detections(reference(images(name)), runner(images(name)), f"{kind}, {name}")
    # Evaluation's way in: pre-processed images and their scales. Images of the network input
    # size go through the file's uint8 input unchanged.
    network_inputs, _ = preprocess_images(images("network size"), config)
    image_scales = tf.constant([1.5, 0.5])
    expected = Detector(reference_config, model).detect_preprocessed(network_inputs, image_scales)
    found = runner.detect_preprocessed(network_inputs, image_scales)
    assert_same_detections(expected, found, f"{kind}, pre-processed")


def assert_same_detections(expected: dict, found: dict, label: str) -> None:
    """Equal counts; each detection with the class, score (1e-3) and box (IoU 0.99) of one; the
    same mask classes."""
    expected_outputs, found_outputs = expected, found
    expected = detections_from_dict({key: np.asarray(value) for key, value in expected.items()})
    found = detections_from_dict(found)
    np.testing.assert_array_equal(found.num_detections, expected.num_detections, label)
    for i, count in enumerate(expected.num_detections):
        assert count > 10, label
        match = match_detections([value[i][:count] for value in expected[:3]],
                                 [value[i][:count] for value in found[:3]],
                                 score_tolerance=1e-3, min_iou=0.99)
        assert match.num_matched == count, f"{label}, image {i}"
    same_class = np.mean(np.asarray(found_outputs[SEGMENTATION_MASKS])
                         == np.asarray(expected_outputs[SEGMENTATION_MASKS]))
    assert same_class > 0.999, label


@pytest.mark.slow
def test_onnx_without_nms_gives_the_decoded_boxes_and_scores(network, onnx_pre_nms):
    model, config = network
    runner = open_exported(onnx_pre_nms, config)
    postprocessor = Postprocessor(config)
    for name in IMAGES:
        network_inputs, image_scales = preprocess_images(images(name), config)
        outputs = model_outputs(config, model(network_inputs, training=False))
        logits, regressions = postprocessor.merge_levels(outputs.class_outputs,
                                                         outputs.box_outputs)
        boxes = decode_boxes(regressions, postprocessor.anchors.boxes)
        found = runner.run(images(name))
        assert sorted(found) == ["boxes", "scores", SEGMENTATION_MASKS]
        np.testing.assert_allclose(found["boxes"], boxes * image_scales[:, None, None],
                                   atol=1e-3)
        np.testing.assert_allclose(found["scores"], tf.sigmoid(logits), atol=1e-4)
    with pytest.raises(ValueError, match=r"has no NMS \(exported with --onnx_nms=false\)"):
        runner(images("tall"))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "openvino"])
def test_a_file_of_another_input_size_is_named(exported, kind):
    config = get_config("efficientdet-d0", f"{SHARED},image_size=256")
    with pytest.raises(ValueError, match="exported with network input size 128x128 but the "
                                         "config's is 256x256: give the --model_name"):
        open_exported(exported[kind], config)


def test_a_missing_runtime_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)
    with pytest.raises(MissingRuntimeError,
                       match=r"onnxruntime is needed to run ONNX files.*pip install -e "
                             r"\"\.\[deploy\]\" \(or pip install onnxruntime\)"):
        open_onnx(tmp_path / "model.onnx", get_config("efficientdet-d0"))


def test_a_missing_quantizer_names_the_install_command(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "nncf", None)
    with pytest.raises(MissingRuntimeError,
                       match=r"nncf is needed to quantize OpenVINO IRs.*pip install -e "
                             r"\"\.\[deploy\]\" \(or pip install nncf\)"):
        quantized_ir(None, [])


@pytest.mark.parametrize("flag, file", [("--onnx_nms=false", "ONNX file: give --onnx"),
                                        ("--onnx_precision=int8", "ONNX file: give --onnx"),
                                        ("--openvino_precision=int8",
                                         "OpenVINO IR file: give --openvino")])
def test_a_file_flag_without_its_file_is_refused(flag, file, tmp_path, capsys):
    status = run_cli("--mode=export", f"--saved_model_dir={tmp_path}", f"--ckpt={tmp_path}", flag)
    assert status != 0
    assert f"{flag} changes the {file} too" in capsys.readouterr().err


@pytest.mark.slow  # converts the network to ONNX, then calibrates and quantizes it
def test_an_int8_onnx_file_has_int8_convolutions_and_the_float_files_scores(
    network, onnx_pre_nms, tmp_path
):
    """Every convolution reads int8 weights (QDQ), and every anchor's class scores and box are
    the float file's within int8's rounding. Compared before NMS (--onnx_nms=false): after it,
    this random model's near-tied overlapping boxes would swap on any rounding."""
    import onnx  # noqa: PLC0415 (the deploy extra)
    import onnxruntime  # noqa: PLC0415

    model, config = network
    path = export_formats(Detector(config, model), tmp_path, ["onnx_int8"], onnx_nms=False,
                          calibration_data="synthetic:val:8", num_calibration_images=8)["onnx_int8"]
    assert path == tmp_path / "model_int8.onnx"
    graph = onnx.load(path).graph
    int8_initializers = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8}
    int8_weights = {node.output[0] for node in graph.node
                    if node.op_type == "DequantizeLinear" and node.input[0] in int8_initializers}
    convolutions = [node for node in graph.node if node.op_type == "Conv"]
    assert convolutions and all(node.input[1] in int8_weights for node in convolutions)
    int8, float32 = (onnxruntime.InferenceSession(str(file)).run(["boxes", "scores"], {
        "images": images("batch of 2")}) for file in (path, onnx_pre_nms))
    np.testing.assert_allclose(int8[1], float32[1], atol=0.03)
    np.testing.assert_allclose(int8[0], float32[0], atol=1.0)


@pytest.mark.slow  # converts the network to OpenVINO, then calibrates and quantizes it
def test_an_int8_openvino_ir_quantizes_the_network_alone(network, exported, tmp_path):
    """Most convolutions read int8 (FakeQuantize) inputs, but the last ones (the class and box
    predictions, the segmentation logits) and everything after them (decoding, NMS) stay float;
    the top scores are the float IR's within int8's rounding."""
    import openvino  # noqa: PLC0415 (the deploy extra)

    model, config = network
    path = export_formats(Detector(config, model), tmp_path, ["openvino_int8"],
                          calibration_data="synthetic:val:8",
                          num_calibration_images=8)["openvino_int8"]
    assert path == tmp_path / "openvino_int8" / "model.xml"
    ops = openvino.Core().read_model(path).get_ordered_ops()
    convolutions = [op for op in ops if op.get_type_name() in CONVOLUTIONS]
    quantized = [op for op in convolutions if "FakeQuantize" in input_types(op)]
    assert len(quantized) > len(convolutions) / 2
    for op in ops_that_stay_float(ops):
        assert "FakeQuantize" not in input_types(op), op
    found, expected = (detections_from_dict(open_exported(file, config)(images("batch of 2")))
                       for file in (path, exported["openvino"]))
    np.testing.assert_allclose(found.scores[:, :10], expected.scores[:, :10], atol=0.05)


def input_types(op) -> list[str]:
    return [value.get_source_output().get_node().get_type_name() for value in op.inputs()]


def ops_that_stay_float(ops) -> list:
    """The ops from the IR's outputs back to the last convolutions (included), through every
    value read: the decoding, NMS, the predictions, and the pre-processing's shape arithmetic."""
    found, stack = {}, [op for op in ops if op.get_type_name() == "Result"]
    while stack:
        op = stack.pop()
        if op.get_friendly_name() in found or op.get_type_name() == "FakeQuantize":
            continue
        found[op.get_friendly_name()] = op
        # ShapeOf reads the shape of a network tensor, not its values.
        if op.get_type_name() not in (*CONVOLUTIONS, "ShapeOf"):
            stack.extend(value.get_source_output().get_node() for value in op.inputs())
    return list(found.values())


@pytest.mark.parametrize("file_format", ["onnx_int8", "openvino_int8"])
def test_int8_calibration_data_without_images_is_named(file_format, tmp_path):
    """TFRecords that hold no image (a conversion that skipped every one): named before the
    network is read (the detector has none here), and nothing is written."""
    tf.io.TFRecordWriter(str(tmp_path / "calibration-00000-of-00001.tfrecord")).close()
    spec = f"{tmp_path}/calibration-*"
    detector = SimpleNamespace(network=None, config=get_config("efficientdet-d0", SHARED))
    with pytest.raises(ConfigError, match=re.escape(
            f"The int8 calibration data {spec} yields no images: give images of the data the "
            "model will see (--file_pattern, or representative_data).")):
        export_formats(detector, tmp_path / "export", [file_format], calibration_data=spec)
    assert not list(tmp_path.glob("export/**/*"))


@pytest.mark.parametrize("path", ["model.onnx", "float32.tflite", "checkpoint"])
def test_bf16_is_refused_for_what_is_no_openvino_ir(path, tmp_path):
    with pytest.raises(ConfigError, match=re.escape(
            f"Inference precision bf16 is for OpenVINO IRs (.xml); {tmp_path / path} runs at its "
            "own precision: leave the precision out.")):
        open_detector(tmp_path / path, get_config("efficientdet-d0", SHARED), precision="bf16")


def without_bf16(core_class):
    """`openvino.Core` as on a CPU without bf16 (its optimization capabilities lack BF16)."""

    class Core(core_class):
        def get_property(self, device, name):
            value = super().get_property(device, name)
            return ([c for c in value if c != "BF16"]
                    if name == "OPTIMIZATION_CAPABILITIES" else value)

    return Core


@pytest.mark.slow  # the shared OpenVINO IR, compiled at bf16 and at f32
def test_an_openvino_ir_runs_at_bf16_or_says_why_not(network, exported, monkeypatch, caplog):
    """bf16 (this CPU has it, or the test is skipped): the f32 scores within bf16's rounding.
    A CPU without bf16 (OpenVINO's capabilities without BF16): a warning, and float32."""
    import openvino  # noqa: PLC0415 (the deploy extra)

    _, config = network
    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16")
    bf16 = open_exported(exported["openvino"], config, "bf16")
    assert bf16.description.endswith(" at bf16")
    found, expected = (detections_from_dict(runner(images("batch of 2")))
                       for runner in (bf16, open_exported(exported["openvino"], config)))
    # The top scores within bf16's rounding (not the boxes: this random model's near-tied
    # overlapping anchors swap under soft-NMS on any rounding).
    np.testing.assert_allclose(found.scores[:, :10], expected.scores[:, :10], atol=0.02)
    monkeypatch.setattr(openvino, "Core", without_bf16(openvino.Core))
    fallback = open_exported(exported["openvino"], config, "bf16")
    assert fallback.description.endswith(" at f32")
    assert "This CPU has no bf16 (OpenVINO finds WINOGRAD, FP32" in caplog.text
