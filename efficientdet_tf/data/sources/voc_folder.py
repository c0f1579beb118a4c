"""The dataset spec 'voc:<annotations_dir>:<images_dir>': a flat folder of Pascal VOC XML files, as
labelImg writes them, beside a folder of images; each image is found by its XML's <filename>."""

from __future__ import annotations

from pathlib import Path

from efficientdet_tf.data.formats.pascal import parse_annotation_file
from efficientdet_tf.data.sources.named_boxes import HoldOut, NamedBoxesSource, Skipped


class VocFolderSource(NamedBoxesSource):
    """Every `*.xml` of `annotations_dir` with its image in `images_dir`; XML files that cannot be
    read are skipped and counted (see `NamedBoxesSource` for the rest)."""

    def __init__(
        self,
        annotations_dir: str | Path,
        images_dir: str | Path,
        *,
        label_map=None,
        hold_out: HoldOut | None = None,
        description: str | None = None,
    ):
        annotations_dir = Path(annotations_dir)
        description = description or f"voc:{annotations_dir}:{images_dir}"
        xml_files = sorted(annotations_dir.glob("*.xml")) if annotations_dir.is_dir() else []
        if not xml_files:
            raise FileNotFoundError(
                f"{description}: no .xml files in {str(annotations_dir)!r}; give the folder of "
                "the VOC XML files first, then the image folder: "
                "'voc:<annotations_dir>:<images_dir>'."
            )
        annotations, skipped = [], Skipped()
        for path in xml_files:
            try:
                annotations.append(parse_annotation_file(path))
            except ValueError as error:
                skipped.add("unreadable annotation XML", str(error))
        super().__init__(description, annotations, images_dir, skipped=skipped,
                         label_map=label_map, hold_out=hold_out)
