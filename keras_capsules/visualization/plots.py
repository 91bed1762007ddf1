"""Figures of a capsule model's reconstructions, capsule dimensions and training."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_capsules.visualization._matplotlib import new_figure, save
from keras_capsules.visualization.capsules import (
    CapsuleAutoencoder,
    check_capsule_model,
    class_capsules,
    perturb_capsule,
)

PAPER_DELTAS = tuple(round(-0.25 + 0.05 * k, 2) for k in range(11))
# `plot_history` marks the points of runs up to this many epochs only.
MAX_MARKED_EPOCHS = 20


def _as_images(name: str, images: Any) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"Received an invalid value for `{name}`, expected images of "
            "shape (batch, height, width) or (batch, height, width, channels) "
            f"with 1, 3 or 4 channels. Received: {name}.shape={images.shape}"
        )
    if images.dtype == np.uint8:
        images = images / 255.0
    return np.clip(images.astype("float32"), 0.0, 1.0)


def _show(axes: Any, image: np.ndarray) -> None:
    if image.shape[-1] == 1:
        axes.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        axes.imshow(image)
    axes.set_xticks([])
    axes.set_yticks([])


def plot_reconstructions(
    images: Any,
    reconstructions: Any,
    path: str | Path | None = None,
    max_images: int = 10,
) -> Any:
    """Plots images in a row above their reconstructions.

    Args:
        images: Images `(batch, height, width[, channels])`, floats in
            [0, 1] or uint8.
        reconstructions: Reconstructions of the same shape, e.g. the second
            output of `CapsNet.predict`.
        path: Where to save the figure as PNG (or any format matplotlib
            infers from the suffix). Defaults to `None`, not saved.
        max_images: At most this many columns. Defaults to `10`.

    Returns:
        The matplotlib `Figure`, with `2 * columns` axes.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> images = np.random.rand(4, 28, 28, 1)
    >>> figure = keras_capsules.visualization.plot_reconstructions(images, images)
    >>> len(figure.axes)
    8
    """
    images = _as_images("images", images)
    reconstructions = _as_images("reconstructions", reconstructions)
    if images.shape != reconstructions.shape:
        raise ValueError(
            "Expected `images` and `reconstructions` of the same shape. "
            f"Received: images.shape={images.shape}, "
            f"reconstructions.shape={reconstructions.shape}"
        )
    columns = min(len(images), max_images)
    if columns < 1:
        raise ValueError("Received no images to plot: `images` is empty.")
    figure = new_figure(1.2 * columns, 2.6)
    grid = figure.subplots(2, columns, squeeze=False)
    for column in range(columns):
        _show(grid[0, column], images[column])
        _show(grid[1, column], reconstructions[column])
    grid[0, 0].set_ylabel("input")
    grid[1, 0].set_ylabel("reconstruction")
    figure.suptitle("Inputs (top) and their reconstructions (bottom)")
    figure.tight_layout()
    save(figure, path)
    return figure


def plot_perturbations(
    model: CapsuleAutoencoder,
    image: Any,
    path: str | Path | None = None,
    deltas: Any = PAPER_DELTAS,
) -> Any:
    """Plots what each dimension of the predicted class capsule encodes.

    Fig. 4 of Sabour et al. (2017): the capsule of the predicted (longest)
    class is encoded from `image`; each of its dimensions in turn is
    shifted by each of `deltas` and the result decoded, giving one row per
    dimension and one column per shift.

    Args:
        model: A `CapsuleAutoencoder` with a decoder, e.g.
            `keras_capsules.models.CapsNet`.
        image: One image, `(height, width, channels)` or with a batch axis
            of 1.
        path: Where to save the figure. Defaults to `None`, not saved.
        deltas: The shifts. Defaults to -0.25 to 0.25 in steps of 0.05, as
            in the paper.

    Returns:
        The matplotlib `Figure`, a `capsule_dim x len(deltas)` grid of axes.

    Example:

    >>> import numpy as np
    >>> import keras_capsules
    >>> model = keras_capsules.models.CapsNet(
    ...     image_shape=(20, 20, 1), num_classes=3, conv_filters=4,
    ...     primary_capsule_types=2, capsule_dim=4, decoder_units=(8,))
    >>> figure = keras_capsules.visualization.plot_perturbations(
    ...     model, np.random.rand(20, 20, 1))
    >>> len(figure.axes)
    44
    """
    check_capsule_model(model, needs_decoder=True)
    image = np.asarray(image, dtype="float32")
    image_shape = tuple(getattr(model, "image_shape", image.shape[-3:]))
    if image.ndim == len(image_shape):
        image = image[None]
    if image.shape != (1, *image_shape):
        raise ValueError(
            f"Expected one image of shape {image_shape}. "
            f"Received: image.shape={image.shape}"
        )
    deltas = np.asarray(deltas, dtype="float32")
    capsules = class_capsules(model, image)[0]
    predicted = int(np.argmax(np.linalg.norm(capsules, axis=-1)))
    perturbed, labels = perturb_capsule(capsules, predicted, deltas)
    decoded = keras.ops.convert_to_numpy(model.decode(perturbed, labels))
    decoded = _as_images("reconstructions", decoded)

    rows, columns = capsules.shape[-1], len(deltas)
    # Sized from the cell so that the square images fill the grid, with
    # fixed margins (in inches) for the title, the column and row labels.
    cell, gap = 0.5, 0.05
    left, right, top, bottom = 0.45, 0.1, 0.75, 0.1
    width = left + right + cell * (columns + gap * (columns - 1))
    height = top + bottom + cell * (rows + gap * (rows - 1))
    figure = new_figure(width, height)
    grid = figure.subplots(rows, columns, squeeze=False)
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        wspace=gap,
        hspace=gap,
    )
    for row in range(rows):
        for column in range(columns):
            axes = grid[row, column]
            _show(axes, decoded[row * columns + column])
            if row == 0:
                axes.set_title(f"{deltas[column]:+.2f}", fontsize=7)
        grid[row, 0].set_ylabel(f"d{row}", fontsize=7, rotation=0, labelpad=10)
    figure.suptitle(
        f"Class {predicted} capsule: each dimension shifted by "
        f"{deltas[0]:+.2f} to {deltas[-1]:+.2f}",
        fontsize=9,
    )
    save(figure, path)
    return figure


def _history_dict(history: Any) -> dict[str, list[float]]:
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict) or not logs:
        raise ValueError(
            "Expected a `keras.callbacks.History` (what `fit` returns) or a "
            "non-empty dict of per-epoch values. "
            f"Received: history={history!r}"
        )
    return {key: [float(v) for v in values] for key, values in logs.items()}


def _paired(keys: list[str]) -> list[str]:
    """The keys in order of quantity, each training key before its `val_` twin."""
    bases = dict.fromkeys(key.removeprefix("val_") for key in keys)
    return [k for base in bases for k in (base, f"val_{base}") if k in keys]


def _coincide(a: np.ndarray, b: np.ndarray, tolerance: float) -> bool:
    """Whether two curves would be drawn over one another."""
    if a.shape != b.shape or not np.array_equal(np.isnan(a), np.isnan(b)):
        return False
    finite = ~np.isnan(a)
    return bool(np.all(np.abs(a[finite] - b[finite]) <= tolerance))


def _visible_series(
    logs: dict[str, list[float]], keys: list[str], log_scale: bool
) -> list[tuple[str, list[str]]]:
    """Groups the keys whose curves coincide on the axes: one line per group.

    Two curves coincide when they differ nowhere by more than 1 % of the
    axes' height (in log space on a log scale): the second would be hidden
    under the first, so it is drawn once, labelled with both names.
    """
    curves: dict[str, np.ndarray] = {}
    for key in keys:
        values = np.asarray(logs[key], dtype="float64")
        curves[key] = np.log10(values) if log_scale else values
    finite = np.concatenate([c[~np.isnan(c)] for c in curves.values()] or [[]])
    span = float(np.ptp(finite)) if finite.size else 0.0
    tolerance = 0.01 * span
    groups: list[tuple[str, list[str]]] = []
    for key in keys:
        for first, members in groups:
            if _coincide(curves[first], curves[key], tolerance):
                members.append(key)
                break
        else:
            groups.append((key, [key]))
    return groups


def plot_history(
    history: Any, path: str | Path | None = None, title: str | None = None
) -> Any:
    """Plots the losses and accuracies logged by `fit`, per epoch.

    Keys with `loss` in their name go to the first axes (log scale when all
    are positive), keys with `acc` to the second. A quantity keeps one
    colour: training is solid, validation (`val_...`) dashed. Points are
    marked up to 20 epochs only, so long runs stay readable. Curves that
    coincide on the axes are drawn once and named together in the legend
    (`"first_loss ≈ second_loss"`), so the legend lists only lines one can
    see. The layout is constrained: titles and legends stay in the figure.

    Args:
        history: The `History` returned by `fit`, or its `history` dict.
        path: Where to save the figure. Defaults to `None`, not saved.
        title: A title above the axes. Defaults to `None`, no title.

    Returns:
        The matplotlib `Figure`: one axes for the losses, and one more for
        the accuracies if any were logged.

    Example:

    >>> import keras_capsules
    >>> figure = keras_capsules.visualization.plot_history(
    ...     {"loss": [0.3, 0.1], "lengths_accuracy": [0.8, 0.95]})
    >>> len(figure.axes)
    2
    """
    logs = _history_dict(history)
    # The total loss first, then its terms.
    loss_keys = _paired(
        sorted(
            (key for key in logs if "loss" in key),
            key=lambda k: k.removeprefix("val_") != "loss",
        )
    )
    accuracy_keys = _paired([key for key in logs if "acc" in key])
    panels = [("loss", loss_keys)] + (
        [("accuracy", accuracy_keys)] if accuracy_keys else []
    )
    figure = new_figure(5.0 * len(panels), 3.6, layout="constrained")
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (panel, keys) in zip(grid, panels, strict=True):
        log_scale = panel == "loss" and all(v > 0 for key in keys for v in logs[key])
        series = _visible_series(logs, keys, log_scale)
        # A metric and its `val_` twin share a colour, so pairs read at a glance.
        bases = list(dict.fromkeys(key.removeprefix("val_") for key, _ in series))
        for key, members in series:
            values = logs[key]
            epochs = np.arange(1, len(values) + 1)
            axes.plot(
                epochs,
                values,
                linestyle="--" if key.startswith("val_") else "-",
                color=f"C{bases.index(key.removeprefix('val_')) % 10}",
                marker="o" if len(values) <= MAX_MARKED_EPOCHS else "None",
                markersize=3,
                label=" ≈ ".join(members),
            )
        if log_scale:
            axes.set_yscale("log")
        axes.set_title(panel)
        axes.set_xlabel("epoch")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        if keys:
            axes.legend(fontsize=8)
    if title is not None:
        figure.suptitle(title)
    save(figure, path)
    return figure
