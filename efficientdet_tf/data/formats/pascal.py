"""Pascal VOC folders: Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt; for the
segmentation sets ImageSets/Segmentation/<split>.txt and SegmentationClass/<id>.png.

Boxes are read as the official converter reads them: the XML pixel values as they are (VOC's
1-based coordinates are not shifted), normalized by the annotated image size.
"""

from __future__ import annotations

import collections
import dataclasses
import xml.etree.ElementTree as ElementTree
from pathlib import Path

from efficientdet_tf.data.formats.annotations import BOX_COORDINATES, ImageAnnotations


@dataclasses.dataclass
class VocObject:
    name: str
    box: tuple[float, float, float, float]  # ymin, xmin, ymax, xmax
    difficult: bool


@dataclasses.dataclass
class VocAnnotation:
    """One parsed XML file."""

    example_id: str
    file_name: str
    height: int  # 0 when the XML has no size
    width: int
    objects: list[VocObject]


def read_split(data_dir: str | Path, split: str, task: str = "Main") -> list[str]:
    """Example ids listed in ImageSets/<task>/<split>.txt (task: Main, or Segmentation)."""
    split_dir = Path(data_dir) / "ImageSets" / task
    path = split_dir / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in split_dir.glob("*.txt")) if split_dir.is_dir() else []
        raise FileNotFoundError(
            f"Split file {path} does not exist; splits found in {split_dir}: "
            f"{available or 'none'}. "
            f"data_dir must hold Annotations/, JPEGImages/ and ImageSets/{task}/."
        )
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def parse_annotation(data_dir: str | Path, example_id: str) -> VocAnnotation:
    """Reads Annotations/<example_id>.xml; raises ValueError naming the file if it is unusable."""
    return parse_annotation_file(Path(data_dir) / "Annotations" / f"{example_id}.xml")


def parse_annotation_file(path: str | Path) -> VocAnnotation:
    """Reads one VOC XML file (as labelImg writes them too), its stem being the example id;
    raises ValueError naming the file if it is unusable."""
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except (OSError, ElementTree.ParseError) as error:
        raise ValueError(f"{path}: cannot read the annotation ({error})") from None
    size = root.find("size")
    try:
        height = int(float(size.findtext("height", "0"))) if size is not None else 0
        width = int(float(size.findtext("width", "0"))) if size is not None else 0
    except ValueError:
        raise ValueError(f"{path}: the <size> is not a number") from None
    objects = []
    for element in root.iter("object"):
        box = element.find("bndbox")
        try:
            ymin, xmin, ymax, xmax = (float(box.findtext(key)) for key in BOX_COORDINATES)
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"{path}: an object has no valid bndbox") from None
        difficult = element.findtext("difficult", "0").strip() not in ("0", "")
        name = element.findtext("name", "").strip()
        objects.append(VocObject(name, (ymin, xmin, ymax, xmax), difficult))
    file_name = (root.findtext("filename") or f"{path.stem}.jpg").strip()
    return VocAnnotation(path.stem, file_name, height, width, objects)


def image_path(data_dir: str | Path, annotation: VocAnnotation) -> Path:
    """JPEGImages/<XML filename>, or JPEGImages/<example id>.jpg when that file does not exist."""
    images = Path(data_dir) / "JPEGImages"
    named = images / annotation.file_name
    return named if named.is_file() else images / f"{annotation.example_id}.jpg"


def mask_path(data_dir: str | Path, example_id: str) -> Path:
    """SegmentationClass/<example id>.png: the palette PNG of class indices (255: boundary)."""
    return Path(data_dir) / "SegmentationClass" / f"{example_id}.png"


def to_image_annotations(
    annotation: VocAnnotation,
    image_id: int,
    class_ids: dict[str, int],
    ignore_difficult: bool,
) -> tuple[ImageAnnotations, collections.Counter]:
    """The objects of known classes (and, if asked, not difficult), and counts of those left out."""
    left_out = collections.Counter()
    kept = []
    for obj in annotation.objects:
        if obj.name not in class_ids:
            left_out[f"dropped: class {obj.name!r} not in the label map"] += 1
        elif ignore_difficult and obj.difficult:
            left_out["dropped: difficult"] += 1
        else:
            kept.append(obj)
    boxes = [obj.box for obj in kept]
    image_annotations = ImageAnnotations(
        image_id=image_id,
        file_name=annotation.file_name,
        height=annotation.height,
        width=annotation.width,
        boxes=boxes,
        classes=[class_ids[obj.name] for obj in kept],
        is_crowd=[0] * len(kept),
        areas=[(ymax - ymin) * (xmax - xmin) for ymin, xmin, ymax, xmax in boxes],
    )
    return image_annotations, left_out


def class_names_found(annotations: list[VocAnnotation]) -> dict[int, str]:
    """A label map of the (non-empty) class names in `annotations`, sorted, with ids 1..K."""
    names = {obj.name for annotation in annotations for obj in annotation.objects}
    names = sorted(name for name in names if name)
    return {i + 1: name for i, name in enumerate(names)}
