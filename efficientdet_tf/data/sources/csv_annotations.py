"""The dataset spec 'csv:<file>:<images_dir>[:<SET>]': boxes as CSV rows, in either common form.

- With a header naming the columns `filename,width,height,class,xmin,ymin,xmax,ymax` (in any
  order, other columns ignored): one row per box, in pixels, as the labelImg / TF Object Detection
  tutorials' xml_to_csv scripts write them.
- Without a header, the AutoML / Model Maker form `SET,path,label,x_min,y_min,,,x_max,y_max,,`
  (or with all four vertices): coordinates are fractions of the image size; SET is TRAIN,
  VALIDATION, TEST or UNASSIGNED, and `set_name` keeps the rows of one. A row `SET,path,,,...`
  with no label is an image without boxes. Paths relative to nothing are joined to images_dir;
  for an absolute path or a URL (gs://...), the file of that name in images_dir is read.

A row that cannot be read is skipped and counted, as are missing or unreadable images.
"""

from __future__ import annotations

import csv
import posixpath
from pathlib import Path

from efficientdet_tf.data.formats.pascal import VocAnnotation, VocObject
from efficientdet_tf.data.sources.named_boxes import HoldOut, NamedBoxesSource, Skipped

HEADER_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
AUTOML_SETS = ("TRAIN", "VALIDATION", "TEST", "UNASSIGNED")
# AutoML columns: set, path, label, then x, y of the vertices; (x_min, y_min) and (x_max, y_max)
# are at these places in both the two-vertex and the four-vertex form.
_AUTOML_BOX_COLUMNS = (4, 3, 8, 7)  # ymin, xmin, ymax, xmax


class CsvSource(NamedBoxesSource):
    """The boxes of a CSV file in either form (see the module docstring) and their images."""

    def __init__(
        self,
        csv_file: str | Path,
        images_dir: str | Path,
        *,
        set_name: str | None = None,
        label_map=None,
        hold_out: HoldOut | None = None,
        description: str | None = None,
    ):
        csv_file = Path(csv_file)
        description = description or f"csv:{csv_file}:{images_dir}"
        if not csv_file.is_file():
            raise FileNotFoundError(f"{description}: CSV file {str(csv_file)!r} does not exist.")
        with csv_file.open(newline="", encoding="utf-8-sig") as file:
            rows = [row for row in csv.reader(file) if any(cell.strip() for cell in row)]
        if not rows:
            raise ValueError(f"{description}: {csv_file} has no rows.")
        header = [cell.strip().lower() for cell in rows[0]]
        skipped = Skipped()
        if set(HEADER_COLUMNS) <= set(header):
            if set_name:
                raise ValueError(f"Dataset spec {description!r}: a set name ({set_name!r}) only "
                                 "applies to the headerless AutoML form; hold out a part with "
                                 "':val:10%' instead.")
            annotations = _read_header_form(rows[1:], header, csv_file, skipped)
            normalized = False
        elif rows[0][0].strip().upper() in AUTOML_SETS:
            annotations = _read_automl_form(rows, _checked_set(set_name, description), csv_file,
                                            skipped)
            normalized = True
        else:
            raise ValueError(
                f"{description}: {csv_file} is neither a CSV with the header "
                f"{','.join(HEADER_COLUMNS)} nor an AutoML CSV (rows "
                f"'SET,path,label,x_min,y_min,,,x_max,y_max,,' with SET one of "
                f"{', '.join(AUTOML_SETS)}); its first row is {rows[0]}."
            )
        super().__init__(description, annotations, images_dir, skipped=skipped,
                         label_map=label_map, hold_out=hold_out, boxes_normalized=normalized)


def _checked_set(set_name: str | None, description: str) -> str | None:
    if set_name is not None and set_name.upper() not in AUTOML_SETS:
        raise ValueError(f"Dataset spec {description!r}: set {set_name!r} is not one of "
                         f"{', '.join(AUTOML_SETS)}.")
    return set_name and set_name.upper()


def _read_header_form(rows, header, csv_file, skipped) -> list[VocAnnotation]:
    column = {name: header.index(name) for name in HEADER_COLUMNS}
    annotations: dict[str, VocAnnotation] = {}
    for line, row in enumerate(rows, start=2):
        try:
            values = {name: row[index].strip() for name, index in column.items()}
            file_name, name = values["filename"], values["class"]
            height, width = (int(float(values[key])) for key in ("height", "width"))
            box = tuple(float(values[key]) for key in ("ymin", "xmin", "ymax", "xmax"))
        except (IndexError, ValueError):
            skipped.add("bad CSV row", f"{csv_file}:{line}")
            continue
        if not file_name or not name:
            skipped.add("bad CSV row", f"{csv_file}:{line}")
            continue
        annotation = annotations.setdefault(
            file_name, VocAnnotation(Path(file_name).stem, file_name, height, width, [])
        )
        annotation.objects.append(VocObject(name, box, difficult=False))
    return list(annotations.values())


def _read_automl_form(rows, set_name, csv_file, skipped) -> list[VocAnnotation]:
    annotations: dict[str, VocAnnotation] = {}
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if len(cells) < 2 or cells[0].upper() not in AUTOML_SETS or not cells[1]:
            skipped.add("bad CSV row", f"{csv_file}:{line}")
            continue
        if set_name and cells[0].upper() != set_name:
            continue
        file_name = _file_name_in_images_dir(cells[1])
        label = cells[2] if len(cells) > 2 else ""
        has_box = bool(label) or any(cells[3:])  # else: a row of an image without boxes
        box = _automl_box(cells) if has_box else ()
        if has_box and (not label or box is None):
            skipped.add("bad CSV row", f"{csv_file}:{line}")
            continue
        annotation = annotations.setdefault(
            file_name, VocAnnotation(Path(file_name).stem, file_name, 0, 0, [])
        )
        if has_box:
            annotation.objects.append(VocObject(label, box, difficult=False))
    return list(annotations.values())


def _automl_box(cells: list[str]) -> tuple[float, ...] | None:
    """ymin, xmin, ymax, xmax as fractions of the image size; None unless all are in [0, 1]."""
    try:
        box = tuple(float(cells[index]) for index in _AUTOML_BOX_COLUMNS)
    except (IndexError, ValueError):
        return None
    return box if all(0.0 <= value <= 1.0 for value in box) else None


def _file_name_in_images_dir(path: str) -> str:
    """A relative path as it is; an absolute path or URL (gs://bucket/a/b.jpg) by its base name."""
    if "://" in path or posixpath.isabs(path) or Path(path).is_absolute():
        return posixpath.basename(path)
    return path
