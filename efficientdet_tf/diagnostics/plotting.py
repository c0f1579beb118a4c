"""Figures drawn off screen: matplotlib's object-oriented API on an Agg canvas, so that no
window is needed and matplotlib's global backend is left as it is."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 100


def new_figure(width_inches: float, height_inches: float) -> Figure:
    """An empty figure with its own Agg canvas."""
    figure = Figure(figsize=(width_inches, height_inches), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Writes `figure` as a PNG (its size in pixels: inches times `DPI`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI)
    return path


def image_grid(images: list[Image.Image], columns: int, cell_size: int) -> Image.Image:
    """The images side by side, `columns` a row, each fitted into a `cell_size` square."""
    rows = max(1, -(-len(images) // columns))
    grid = Image.new("RGB", (columns * cell_size, rows * cell_size), (255, 255, 255))
    for index, image in enumerate(images):
        image = image.copy()
        image.thumbnail((cell_size, cell_size))
        row, column = divmod(index, columns)
        grid.paste(image, (column * cell_size, row * cell_size))
    return grid
