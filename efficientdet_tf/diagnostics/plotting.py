"""Figures drawn off screen: matplotlib's object-oriented API on an Agg canvas, so that no
window is needed and matplotlib's global backend is left as it is."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from efficientdet_tf.output_files import written_whole

DPI = 100


def new_figure(width_inches: float, height_inches: float) -> Figure:
    """An empty figure with its own Agg canvas."""
    figure = Figure(figsize=(width_inches, height_inches), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: str | os.PathLike) -> Path:
    """Writes `figure` as a PNG (its size in pixels: inches times `DPI`)."""
    with written_whole(path, "Plot") as partial:
        figure.savefig(partial, dpi=DPI)
    return Path(path)
