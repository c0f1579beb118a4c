"""Figures drawn off screen: matplotlib's object-oriented API on an Agg canvas, so that no
window is needed and matplotlib's global backend is left as it is."""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
