"""Lazy matplotlib import, so that the package itself does not need it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal


def new_figure(
    width: float,
    height: float,
    layout: Literal["constrained", "tight"] | None = None,
) -> Any:
    """A matplotlib Figure on the Agg canvas.

    The Figure is made without `pyplot`, so no GUI backend is touched, no
    global figure list grows, and plotting works on headless machines.
    `layout="constrained"` keeps titles, labels and legends inside it.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "`keras_capsules.visualization` needs matplotlib. Install it "
            'with: pip install "keras-capsules[visualization]"'
        ) from error
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def save(figure: Any, path: str | Path | None) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
