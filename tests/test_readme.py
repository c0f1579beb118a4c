"""The README's Python snippets (its ```python blocks) run as written.

Each runs in a scratch folder holding what it names (a labelImg folder of synthetic shapes,
`image.jpg`, an exported TFLite file), with the official weights by name served from the Keras
cache, where the shared fixture's checkpoint (random weights in the layout of the official
efficientdet-d0 release) stands in for the download. What would take many minutes is shrunk by
monkeypatching, never by editing the snippet: the fine-tuning snippet's detector is D0 at 64x64
with one BiFPN cell and one head repeat (the checkpoint's other cells are left unread), `fit`
runs one step of 2 images, and `export` writes the SavedModel only; the MediaPipe snippet reads
a file exported from such a D0 (COCO's 90 classes).
"""

import re
from pathlib import Path

import keras
import pytest
from official_fixture import FIXTURE_DIR, FIXTURE_MODEL, requires_fixture
from PIL import Image

from efficientdet_tf import object_detector
from efficientdet_tf.config import get_config
from efficientdet_tf.data.sources.synthetic import SyntheticShapes
from efficientdet_tf.export import tflite_metadata
from efficientdet_tf.export.tflite import export_tflite
from efficientdet_tf.label_map import COCO_CLASS_NAMES
from efficientdet_tf.model import official_weights
from efficientdet_tf.model.builder import build_model

README = Path(__file__).resolve().parents[1] / "README.md"
NUM_IMAGES = 10  # 10% held out: 1 validation image
# D0 as the shrunk snippets build it: the official checkpoint still fits (its extra cells unread).
SHRUNK_D0 = {"image_size": 64, "fpn_cell_repeats": 1, "box_class_repeats": 1}


def python_snippets() -> dict[str, str]:
    """{the snippet's first line that is not an import: its code} of README's ```python blocks."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), re.MULTILINE | re.DOTALL)
    return {_name(block): block for block in blocks}


def _name(block: str) -> str:
    return next(line for line in block.splitlines()
                if line and not line.startswith(("import ", "from ")))


SNIPPETS = python_snippets()
NETWORK_ALONE, FINE_TUNING, MEDIAPIPE = (
    next(name for name in SNIPPETS if marker in SNIPPETS[name])
    for marker in ("edet.build_model", "ObjectDetector.from_pretrained", "mediapipe"))


def test_every_snippet_is_run_here():
    assert sorted(SNIPPETS) == sorted([NETWORK_ALONE, FINE_TUNING, MEDIAPIPE])


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A scratch working folder; official weights by name come from the fixture."""
    cached = tmp_path / "keras_home" / official_weights.CACHE_SUBDIR / f"{FIXTURE_MODEL}_extracted"
    cached.mkdir(parents=True)
    for path in (FIXTURE_DIR / "ckpt").iterdir():
        (cached / path.name).symlink_to(path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv(official_weights.BASE_URL_ENV, "http://127.0.0.1:9/offline")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    keras.backend.clear_session()
    return work


def run(snippet: str) -> dict:
    namespace = {"__name__": "readme_snippet"}
    exec(compile(SNIPPETS[snippet], f"README.md: {snippet}", "exec"), namespace)  # noqa: S102
    return namespace


@requires_fixture
def test_the_network_alone(workspace):
    found = run(NETWORK_ALONE)
    assert [tuple(o.shape) for o in found["class_outputs"]] == [
        (1, 512 // 2**level, 512 // 2**level, 9 * 90) for level in range(3, 8)]
    assert len(found["box_outputs"]) == 5
    assert found["mine"].output[0][0].shape[-1] == 9 * 3


@requires_fixture
@pytest.mark.slow
def test_fine_tuning_with_object_detector(workspace, monkeypatch):
    write_labelimg_folder(workspace)
    Image.fromarray(SyntheticShapes(1, (90, 120), seed=7).render(0)).save("image.jpg")
    shrink_object_detector(monkeypatch)

    found = run(FINE_TUNING)
    assert set(found["detections"]) >= {"detection_boxes", "detection_scores"}
    assert (workspace / "detector.keras").is_file()
    assert (workspace / "exported" / "saved_model.pb").is_file()


@requires_fixture
@pytest.mark.slow
def test_mediapipe_reads_an_exported_file(workspace, capsys):
    pytest.importorskip("mediapipe.tasks.python.vision", reason="mediapipe is not installed: "
                        "pip install '.[tflite]'")
    try:
        tflite_metadata._metadata_writers()
    except tflite_metadata.MetadataWriterMissingError as error:
        pytest.skip(f"TFLite metadata writer unavailable: {error}")
    config = get_config("efficientdet-d0", SHRUNK_D0)
    Path("export/d0").mkdir(parents=True)
    export_tflite(build_model(config), config, "export/d0/int8.tflite", "int8",
                  dataset="synthetic:train:2", num_calibration_images=2)
    Image.fromarray(SyntheticShapes(1, (90, 120), seed=7).render(0)).save("image.jpg")
    run(MEDIAPIPE)
    names = tuple(COCO_CLASS_NAMES.values())
    assert all(line.startswith(names) for line in capsys.readouterr().out.splitlines())


def write_labelimg_folder(root: Path) -> None:
    """images/*.png and labelImg annotations/*.xml of NUM_IMAGES synthetic images."""
    shapes = SyntheticShapes(NUM_IMAGES, (64, 80), seed=3)
    (root / "images").mkdir()
    (root / "annotations").mkdir()
    for index in range(NUM_IMAGES):
        truth = shapes.annotations(index)
        Image.fromarray(shapes.render(index)).save(root / "images" / truth.file_name)
        objects = "".join(
            f"<object><name>{shapes.class_names[c]}</name><bndbox><xmin>{x0:g}</xmin>"
            f"<ymin>{y0:g}</ymin><xmax>{x1:g}</xmax><ymax>{y1:g}</ymax></bndbox></object>"
            for (y0, x0, y1, x1), c in zip(truth.boxes.tolist(), truth.classes.tolist()))
        (root / "annotations" / f"{Path(truth.file_name).stem}.xml").write_text(
            f"<annotation><filename>{truth.file_name}</filename><size><width>{truth.width}"
            f"</width><height>{truth.height}</height><depth>3</depth></size>{objects}"
            "</annotation>")


def shrink_object_detector(monkeypatch) -> None:
    """ObjectDetector as SHRUNK_D0, one step of 2 images, the SavedModel alone exported."""
    real_get_config, real_fit, real_export = (
        object_detector.get_config, object_detector.ObjectDetector.fit,
        object_detector.ObjectDetector.export)

    def small_config(name, hparams=None):
        return real_get_config(name, hparams).override(SHRUNK_D0)

    def short_fit(self, x, **kwargs):
        return real_fit(self, x, **{**kwargs, "epochs": 1, "steps_per_epoch": 1, "batch_size": 2})

    def saved_model_export(self, directory, **kwargs):
        return real_export(self, directory, formats=("saved_model",), **kwargs)

    monkeypatch.setattr(object_detector, "get_config", small_config)
    monkeypatch.setattr(object_detector.ObjectDetector, "fit", short_fit)
    monkeypatch.setattr(object_detector.ObjectDetector, "export", saved_model_export)
