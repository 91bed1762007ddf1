"""The plots make real PNGs: signature, size, content, axes layout."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from keras_capsules.models import CapsNet
from keras_capsules.visualization import (
    CapsuleAutoencoder,
    class_capsules,
    perturb_capsule,
    plot_history,
    plot_perturbations,
    plot_reconstructions,
)
from tests.visualization.png import assert_png_with_content

pytest.importorskip("matplotlib")

SMALL = dict(
    image_shape=(20, 20, 1),
    num_classes=3,
    conv_filters=8,
    primary_capsule_types=4,
    primary_capsule_dim=4,
    capsule_dim=6,
    decoder_units=(16,),
)


def _digits(count: int, size: int = 20) -> np.ndarray:
    """Bright bars on black, one position per image: images with content."""
    images = np.zeros((count, size, size, 1), "float32")
    for i in range(count):
        images[i, 3:-3, 2 + i % (size - 4)] = 1.0
    return images


def test_reconstructions_grid_and_png(tmp_path):
    images = _digits(12)
    path = tmp_path / "out" / "reconstructions.png"

    figure = plot_reconstructions(images, images[:, ::-1], path, max_images=8)

    assert len(figure.axes) == 16
    assert figure.axes[0].get_ylabel() == "input"
    assert figure.axes[8].get_ylabel() == "reconstruction"
    pixels = assert_png_with_content(path, min_width=500)
    assert pixels.shape[1] > pixels.shape[0]  # a wide two-row strip


def test_reconstructions_accept_uint8_without_channel_axis(tmp_path):
    images = (_digits(3)[..., 0] * 255).astype("uint8")
    figure = plot_reconstructions(images, images, tmp_path / "r.png")
    assert len(figure.axes) == 6
    shown = figure.axes[0].get_images()[0].get_array()
    assert float(np.max(shown)) == 1.0


def test_reconstructions_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        plot_reconstructions(_digits(3), _digits(2))
    with pytest.raises(ValueError, match="images.shape"):
        plot_reconstructions(np.zeros((2, 5)), np.zeros((2, 5)))


def test_perturbations_are_a_16_by_11_grid_as_in_the_paper(tmp_path):
    # The paper's 16D class capsules on a narrow model, which is quicker to
    # build and run than the full one and gives the same grid.
    model = CapsNet(**{**SMALL, "capsule_dim": 16})
    kernel = model.class_capsule.kernel
    kernel.assign(np.random.default_rng(0).normal(size=kernel.shape).astype("float32"))
    path = tmp_path / "perturbations.png"

    figure = plot_perturbations(model, _digits(1)[0], path)

    assert len(figure.axes) == 16 * 11
    rows = {round(axes.get_position().y0, 4) for axes in figure.axes}
    columns = {round(axes.get_position().x0, 4) for axes in figure.axes}
    assert len(rows) == 16 and len(columns) == 11
    titles = [axes.get_title() for axes in figure.axes[:11]]
    assert titles[0] == "-0.25" and titles[5] == "+0.00" and titles[-1] == "+0.25"
    pixels = assert_png_with_content(path)
    assert pixels.shape[0] > pixels.shape[1]  # 16 rows, 11 columns


def test_perturbations_take_an_image_with_a_batch_axis_and_custom_deltas():
    model = CapsNet(**SMALL)
    figure = plot_perturbations(model, _digits(1), deltas=[-0.1, 0.0, 0.1])
    assert len(figure.axes) == 6 * 3


def test_perturbations_need_a_capsule_model_with_decoder():
    with pytest.raises(ValueError, match="use_decoder=False"):
        plot_perturbations(CapsNet(**SMALL, use_decoder=False), _digits(1)[0])
    with pytest.raises(
        ValueError,
        match=r"Expected a capsule model with `encode` and `decode` methods.*"
        r"Received: model=object",
    ):
        plot_perturbations(object(), _digits(1)[0])
    with pytest.raises(ValueError, match=r"with `encode` methods.*model=int"):
        class_capsules(3, _digits(1))
    with pytest.raises(ValueError, match="image.shape"):
        plot_perturbations(CapsNet(**SMALL), np.zeros((2, 20, 20, 1)))


class Autoencoder:
    """Not a CapsNet: a model's encoder and decoder behind the protocol."""

    def __init__(self, model):
        self.model = model
        self.image_shape = model.image_shape

    def encode(self, images, return_coupling=False):
        return self.model.encode(images, return_coupling=return_coupling)

    def decode(self, capsules, labels=None):
        return self.model.decode(capsules, labels)


def test_figures_take_any_capsule_autoencoder():
    model = CapsNet(**SMALL)
    wrapper = Autoencoder(model)
    assert isinstance(wrapper, CapsuleAutoencoder)
    assert isinstance(model, CapsuleAutoencoder)
    assert not isinstance(object(), CapsuleAutoencoder)
    figure = plot_perturbations(wrapper, _digits(1)[0], deltas=[-0.1, 0.1])
    assert len(figure.axes) == 6 * 2
    capsules, coupling = class_capsules(wrapper, _digits(3), return_coupling=True)
    np.testing.assert_allclose(capsules, class_capsules(model, _digits(3)), atol=1e-6)
    assert coupling.shape == (3, 3, 16)


def test_perturb_capsule_shifts_one_dimension_per_row():
    capsules = np.arange(6, dtype="float32").reshape(2, 3)
    perturbed, labels = perturb_capsule(capsules, 1, [-0.5, 0.5])
    assert perturbed.shape == (6, 2, 3)
    np.testing.assert_array_equal(labels, np.tile([[0.0, 1.0]], (6, 1)))
    difference = perturbed - capsules
    np.testing.assert_allclose(difference[:, 0], 0.0)
    np.testing.assert_allclose(difference[2, 1], [0.0, -0.5, 0.0])
    np.testing.assert_allclose(difference[5, 1], [0.0, 0.0, 0.5])
    with pytest.raises(ValueError, match="class_index"):
        perturb_capsule(capsules, 2, [0.1])


def test_class_capsules_in_batches_match_one_pass():
    model = CapsNet(**SMALL)
    images = _digits(5)
    capsules, coupling = class_capsules(
        model, images, batch_size=2, return_coupling=True
    )
    assert capsules.shape == (5, 3, 6) and coupling.shape == (5, 3, 16)
    np.testing.assert_allclose(capsules, class_capsules(model, images), atol=1e-6)


def test_history_has_loss_and_accuracy_axes(tmp_path):
    history = {
        "loss": [0.5, 0.3, 0.2],
        "lengths_loss": [0.4, 0.25, 0.15],
        "lengths_accuracy": [0.5, 0.8, 0.9],
        "val_lengths_accuracy": [0.4, 0.7, 0.85],
        "learning_rate": [1e-3, 9e-4, 8.1e-4],
    }
    path = tmp_path / "history.png"

    figure = plot_history(history, path)

    loss_axes, accuracy_axes = figure.axes
    assert [line.get_label() for line in loss_axes.get_lines()] == [
        "loss",
        "lengths_loss",
    ]
    assert loss_axes.get_yscale() == "log"
    lines = accuracy_axes.get_lines()
    assert [line.get_linestyle() for line in lines] == ["-", "--"]
    assert lines[0].get_color() == lines[1].get_color()
    np.testing.assert_array_equal(lines[0].get_xdata(), [1, 2, 3])
    assert_png_with_content(path, min_width=400)


def test_history_accepts_a_keras_history_and_rejects_empty():
    class History:
        history = {"loss": [1.0, 0.5]}

    assert len(plot_history(History()).axes) == 1
    with pytest.raises(ValueError, match="History"):
        plot_history({})


def test_missing_matplotlib_names_the_extra(monkeypatch):
    for module in (
        "matplotlib",
        "matplotlib.figure",
        "matplotlib.backends.backend_agg",
    ):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        ImportError, match=r'pip install "keras-capsules\[visualization\]"'
    ):
        plot_history({"loss": [1.0]})


def _long_history(epochs: int) -> dict[str, list[float]]:
    steps = np.arange(1, epochs + 1)
    return {
        "loss": list(1.0 / steps),
        "val_loss": list(1.2 / steps),
        "lengths_loss": list(0.5 / steps),
        "val_lengths_loss": list(0.7 / steps),
        "lengths_accuracy": list(1.0 - 0.5 / steps),
        "val_lengths_accuracy": list(1.0 - 0.6 / steps),
    }


@pytest.mark.parametrize("epochs", [5, 80])
def test_history_pairs_train_and_validation_by_colour_and_style(epochs):
    figure = plot_history(_long_history(epochs))

    for axes in figure.axes:
        lines = {line.get_label(): line for line in axes.get_lines()}
        for label, line in lines.items():
            if label.startswith("val_"):
                continue
            twin = lines[f"val_{label}"]
            assert line.get_color() == twin.get_color(), label
            assert line.get_linestyle() == "-" and twin.get_linestyle() == "--"
        colours = [line.get_color() for line in axes.get_lines()]
        assert len(set(colours)) == len(lines) // 2  # one per quantity
    markers = {line.get_marker() for axes in figure.axes for line in axes.get_lines()}
    # Markers mark the points of short runs; on long ones they hide the dashes.
    assert markers == ({"o"} if epochs <= 20 else {"None"})


def test_history_legend_lists_only_the_visible_lines():
    history = _long_history(30)
    # MultiMNIST's two digits: equal losses, one curve hidden under the other.
    history["first_loss"] = [0.3 / e for e in range(1, 31)]
    history["second_loss"] = [v * (1 + 1e-4) for v in history["first_loss"]]
    history["val_first_loss"] = [0.4 / e for e in range(1, 31)]
    history["val_second_loss"] = list(history["val_first_loss"])

    figure = plot_history(history)

    for axes in figure.axes:
        visible = [
            line.get_label()
            for line in axes.get_lines()
            if line.get_visible() and not line.get_label().startswith("_")
        ]
        assert [text.get_text() for text in axes.get_legend().get_texts()] == visible
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert labels == [
        "loss",
        "val_loss",
        "lengths_loss",
        "val_lengths_loss",
        "first_loss ≈ second_loss",
        "val_first_loss ≈ val_second_loss",
    ]
    merged = figure.axes[0].get_lines()[4:]
    assert merged[0].get_color() == merged[1].get_color()
    assert [line.get_linestyle() for line in merged] == ["-", "--"]


def test_history_keeps_its_titles_and_legends_in_the_figure(tmp_path):
    figure = plot_history(
        _long_history(80),
        tmp_path / "history.png",
        title="Efficient-CapsNet on MNIST, 80 epochs: losses and accuracies",
    )

    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    box = figure.bbox
    (suptitle,) = figure.texts
    assert suptitle.get_text().startswith("Efficient-CapsNet")
    artists = [suptitle] + [axes.title for axes in figure.axes]
    artists += [axes.get_legend() for axes in figure.axes]
    for artist in artists:
        extent = artist.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, artist
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, artist
    # The figure title sits above the axes' titles, not over them.
    for axes in figure.axes:
        title = axes.title.get_window_extent(renderer)
        assert title.y1 <= suptitle.get_window_extent(renderer).y0
    assert_png_with_content(tmp_path / "history.png", min_width=800)
