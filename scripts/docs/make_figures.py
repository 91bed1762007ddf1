"""Makes the figures of the Concepts and Capsule methods pages.

Every curve is computed with the package's own functions:

- `squash.png`: output length of `keras_capsules.ops.squash` against input
  length (eq. 1 of Sabour et al., 2017);
- `margin_loss.png`: the two terms of `keras_capsules.ops.margin_loss`
  against capsule length (eq. 4);
- `em_routing.png` (for the Capsule methods page, docs/methods.md):
  `keras_capsules.ops.em_routing(..., return_assignments=True)` on a small
  synthetic problem (40 children with 2-entry votes, 2 parents), after 1, 2
  and 3 iterations;
- `coupling.png`: coupling coefficients of a trained CapsNet on real MNIST
  test digits, computed with `keras_capsules.ops.dynamic_routing(..., return_coupling=True)` on the
  trained kernel for
  1, 2 and 3 routing iterations;
- `coupling.json`: the numbers behind `coupling.png`.

The trained model is either a `.keras` file that holds a `RoutingCapsule`
layer (`--model`, e.g. the `capsnet.keras` written by
`examples/capsnet_mnist.py`), or, without `--model`, a small CapsNet built
from the public layers and trained here for a minute or two on CPU.

    python scripts/docs/make_figures.py --data ../shared/data/mnist.npz
    python scripts/docs/make_figures.py --data ../shared/data/mnist.npz \\
        --model runs/example/capsnet.keras
    python scripts/docs/make_figures.py --only em_routing   # one figure
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import keras  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import keras_capsules  # noqa: E402
from keras_capsules import ops as capsule_ops  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ITERATIONS = (1, 2, 3)
# What `--only` selects; without it, all of them.
FIGURES = ("squash", "margin_loss", "em_routing", "coupling")
COLORS = ("#b39ddb", "#7e57c2", "#4527a0")


def _savefig(fig: plt.Figure, path: Path) -> None:
    # No timestamps in the metadata, so unchanged figures give unchanged files.
    fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


def squash_figure(out_dir: Path) -> None:
    """Output length of squash against input length, with the two regimes."""
    lengths = np.linspace(0.0, 5.0, 501, dtype="float32")
    # Vectors of the given lengths along a fixed direction in 8 dimensions.
    direction = np.ones(8, dtype="float32") / np.sqrt(8.0)
    vectors = lengths[:, None] * direction[None, :]
    squashed = capsule_ops.squash(vectors)
    output_lengths = keras.ops.convert_to_numpy(capsule_ops.capsule_length(squashed))

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ax.plot(lengths, output_lengths, color=COLORS[2], lw=2.2, label=r"$\|v\|$ (squash)")
    ax.plot(
        lengths[lengths <= 1.2],
        np.square(lengths[lengths <= 1.2]),
        color="0.45",
        ls="--",
        lw=1.2,
        label=r"$\|s\|^2$ (short vectors)",
    )
    ax.axhline(1.0, color="0.45", ls=":", lw=1.2, label="1 (long vectors)")
    ax.set_xlabel(r"input length $\|s\|$")
    ax.set_ylabel(r"output length $\|v\|$")
    ax.set_xlim(0, 5)
    ax.set_ylim(0, 1.08)
    ax.set_title("squash keeps the direction and maps the length into [0, 1)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    _savefig(fig, out_dir / "squash.png")


def margin_loss_figure(out_dir: Path) -> None:
    """The present-class and absent-class terms of eq. 4 against length."""
    lengths = np.linspace(0.0, 1.0, 401, dtype="float32")[:, None]
    present = capsule_ops.margin_loss(np.ones_like(lengths), lengths)
    absent = capsule_ops.margin_loss(np.zeros_like(lengths), lengths)
    present = keras.ops.convert_to_numpy(present)
    absent = keras.ops.convert_to_numpy(absent)

    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    x = lengths[:, 0]
    ax.plot(
        x,
        present,
        color=COLORS[2],
        lw=2.2,
        label=r"class present: $\max(0, m^+ - \|v_k\|)^2$",
    )
    ax.plot(
        x,
        absent,
        color="#ff8f00",
        lw=2.2,
        label=r"class absent: $\lambda \max(0, \|v_k\| - m^-)^2$",
    )
    ax.axvline(0.9, color=COLORS[2], ls=":", lw=1.2, label=r"$m^+ = 0.9$")
    ax.axvline(0.1, color="#ff8f00", ls=":", lw=1.2, label=r"$m^- = 0.1$")
    ax.set_xlabel(r"capsule length $\|v_k\|$")
    ax.set_ylabel(r"loss term $L_k$")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 0.85)
    ax.set_title(r"margin loss terms ($m^+ = 0.9$, $m^- = 0.1$, $\lambda = 0.5$)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    _savefig(fig, out_dir / "margin_loss.png")


def em_routing_votes(
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small routing problem for EM: 40 children, 2 parents, 2-entry poses.

    Children 0-19 cast tightly clustered votes for parent 1 and scattered
    votes for parent 2; children 20-39 the opposite. Returns the votes
    `(1, 40, 2, 2)`, the children's activations `(1, 40)` and the group of
    each child (0 or 1).
    """
    rng = np.random.default_rng(seed)
    children, half = 40, 20
    centres = np.array([[1.5, 1.0], [-1.0, 1.5]])  # tight cluster of each parent
    votes = np.empty((children, 2, 2))
    group = np.repeat([0, 1], half)
    for j in range(2):
        agree = group == j
        votes[agree, j] = centres[j] + rng.normal(0.0, 0.25, (half, 2))
        votes[~agree, j] = rng.normal(0.0, 1.2, (half, 2))
    activations = rng.uniform(0.5, 1.0, children)
    return (
        votes[None].astype("float32"),
        activations[None].astype("float32"),
        group,
    )


def em_routing_figure(out_dir: Path) -> None:
    """What EM routing does to a small synthetic problem, for r = 1, 2, 3."""
    from matplotlib.patches import Ellipse

    votes, activations, group = em_routing_votes()
    num_parents = votes.shape[2]
    zeros = np.zeros(num_parents, "float32")
    a_in = activations[0].astype("float64")
    fig, axes = plt.subplots(
        num_parents,
        len(ITERATIONS),
        figsize=(10.0, 6.6),
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    scatter = None
    for column, r in enumerate(ITERATIONS):
        poses, a_out, assignments = capsule_ops.em_routing(
            votes,
            activations,
            zeros,
            zeros,
            routing_iterations=r,
            return_assignments=True,
        )
        poses = keras.ops.convert_to_numpy(poses)[0].astype("float64")
        a_out = keras.ops.convert_to_numpy(a_out)[0]
        assignments = keras.ops.convert_to_numpy(assignments)[0].astype("float64")
        for j in range(num_parents):
            ax = axes[j, column]
            v = votes[0, :, j].astype("float64")
            weights = assignments[:, j] * a_in
            mean = weights @ v / weights.sum()
            if not np.allclose(mean, poses[j], atol=1e-4):
                raise AssertionError(f"own mean {mean} != em_routing's {poses[j]}")
            sigma = np.sqrt(weights @ np.square(v - mean) / weights.sum())
            for g, marker in ((0, "o"), (1, "^")):
                scatter = ax.scatter(
                    v[group == g, 0],
                    v[group == g, 1],
                    c=assignments[group == g, j],
                    s=70 * a_in[group == g],
                    marker=marker,
                    cmap="Purples",
                    vmin=0.0,
                    vmax=1.0,
                    edgecolors="0.35",
                    linewidths=0.6,
                    label=f"children {20 * g + 1}-{20 * g + 20}",
                )
            ax.add_patch(
                Ellipse(
                    mean,
                    2 * sigma[0],
                    2 * sigma[1],
                    fill=False,
                    color="#ff8f00",
                    lw=2.0,
                )
            )
            ax.plot(*mean, marker="+", color="#ff8f00", ms=14, mew=2.5)
            ax.set_title(
                f"parent {j + 1}, r = {r}: $a_{j + 1}$ = {a_out[j]:.3f}", fontsize=10
            )
            ax.set_aspect("equal")
            ax.grid(alpha=0.3)
            if j == num_parents - 1:
                ax.set_xlabel("vote entry 1")
            if column == 0:
                ax.set_ylabel("vote entry 2")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.colorbar(
        scatter, ax=axes, shrink=0.8, label=r"assignment $R_{ij}$ of the last M-step"
    )
    fig.suptitle(
        "EM routing of 40 children to 2 parents: votes coloured by $R_{ij}$, "
        r"each parent's mean (+) and 1-$\sigma$ ellipse",
        fontsize=11,
    )
    _savefig(fig, out_dir / "em_routing.png")


def load_mnist(path: Path) -> tuple[np.ndarray, ...]:
    with np.load(path) as data:
        x_train = data["x_train"].astype("float32")[..., None] / 255.0
        x_test = data["x_test"].astype("float32")[..., None] / 255.0
        return (
            x_train,
            data["y_train"].astype("int64"),
            x_test,
            data["y_test"].astype("int64"),
        )


def train_small_capsnet(
    x_train: np.ndarray, y_train: np.ndarray, samples: int, epochs: int, seed: int
) -> keras.Model:
    """A CapsNet smaller than the paper's (64 conv filters, 16 capsule types)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(64, 9, activation="relu")(inputs)
    x = keras_capsules.layers.PrimaryCapsule(16, 8, kernel_size=9, strides=2)(x)
    x = keras_capsules.layers.RoutingCapsule(10, 16, routing_iterations=3)(x)
    lengths = keras_capsules.layers.Length()(x)
    model = keras.Model(inputs, lengths, name="small_capsnet")
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras_capsules.losses.MarginLoss(),
        metrics=["accuracy"],
    )
    labels = keras.utils.to_categorical(y_train[:samples], 10)
    start = time.perf_counter()
    model.fit(x_train[:samples], labels, batch_size=64, epochs=epochs, verbose=2)
    print(f"trained in {time.perf_counter() - start:.0f} s")
    return model


def find_routing_layer(model: keras.Model) -> keras_capsules.layers.RoutingCapsule:
    found = [
        layer
        for layer in model._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, keras_capsules.layers.RoutingCapsule)
    ]
    if len(found) != 1:
        raise ValueError(f"Expected one RoutingCapsule layer, found {len(found)}")
    return found[0]


def routing_inputs(
    model: keras.Model, layer: keras.layers.Layer, x: np.ndarray
) -> np.ndarray:
    """The input capsules of `layer` for images `x`, for any kind of model.

    The layer's `call` is wrapped for the duration of an eager forward pass,
    so this works for functional and subclassed models alike.
    """
    captured = []
    original_call = layer.call

    def capturing_call(inputs, *args, **kwargs):
        captured.append(keras.ops.convert_to_numpy(inputs))
        return original_call(inputs, *args, **kwargs)

    layer.call = capturing_call
    try:
        inputs = x
        # A CapsNet that also takes labels for its decoder: give it zeros.
        if len(getattr(model, "inputs", None) or []) == 2:
            inputs = [x, np.zeros((len(x), 10), "float32")]
        model(inputs, training=False)
    finally:
        layer.call = original_call
    return captured[-1]


def coupling_statistics(
    model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int = 50
) -> dict[int, dict[str, np.ndarray]]:
    """Coupling coefficients of every test digit, for r in ITERATIONS.

    Per routing iteration count r:

    - `class_coupling[n, j]`: the mean over primary capsules i of c[i, j],
      weighted by the length of u_i (an inactive primary capsule's coupling
      carries nothing);
    - `lengths[n, j]`: the length of digit capsule j;
    - `top_share[n]`: the length-weighted share of primary capsules whose
      largest coupling goes to the true class;
    - `true_coupling[n, i]` and `weights[n, i]`: c[i, true class] and the
      normalised length of u_i, for the histogram.
    """
    layer = find_routing_layer(model)
    kernel = keras.ops.convert_to_tensor(layer.kernel)
    keys = ("class_coupling", "lengths", "top_share", "true_coupling", "weights")
    result = {r: {key: [] for key in keys} for r in ITERATIONS}
    for start in range(0, len(x), batch_size):
        truth = y[start : start + batch_size]
        u = routing_inputs(model, layer, x[start : start + batch_size])
        weights = np.linalg.norm(u, axis=-1)  # (batch, input_num_capsules)
        weights = weights / weights.sum(axis=1, keepdims=True)
        for r in ITERATIONS:
            v, c = capsule_ops.dynamic_routing(
                u, kernel, routing_iterations=r, return_coupling=True
            )
            c = keras.ops.convert_to_numpy(
                c
            )  # (batch, num_capsules, input_num_capsules)
            stats = result[r]
            stats["class_coupling"].append(np.einsum("bji,bi->bj", c, weights))
            stats["lengths"].append(
                keras.ops.convert_to_numpy(capsule_ops.capsule_length(v))
            )
            # With r = 1 every coupling is exactly 1/10: no capsule prefers a class.
            top = (c.argmax(axis=1) == truth[:, None]) & (c.max(axis=1) > c.min(axis=1))
            stats["top_share"].append((top * weights).sum(axis=1))
            stats["true_coupling"].append(c[np.arange(len(truth)), truth])
            stats["weights"].append(weights)
    return {
        r: {k: np.concatenate(v) for k, v in stats.items()}
        for r, stats in result.items()
    }


def _weighted_percentiles(
    values: np.ndarray, weights: np.ndarray, q: list[float]
) -> list[float]:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    cumulative /= cumulative[-1]
    return [float(values[order][np.searchsorted(cumulative, p / 100)]) for p in q]


def coupling_figure(
    x: np.ndarray, y: np.ndarray, stats: dict, out_dir: Path, source: str
) -> dict:
    n = len(y)
    num_classes = stats[ITERATIONS[0]]["class_coupling"].shape[1]
    uniform = 1.0 / num_classes
    truth = np.eye(num_classes, dtype=bool)[y]
    summary = {"source": source, "num_test_digits": int(n), "iterations": {}}
    for r in ITERATIONS:
        cc = stats[r]["class_coupling"]
        p5, p50, p95 = _weighted_percentiles(
            stats[r]["true_coupling"].ravel(), stats[r]["weights"].ravel(), [5, 50, 95]
        )
        summary["iterations"][str(r)] = {
            "accuracy": float((stats[r]["lengths"].argmax(1) == y).mean()),
            "coupling_to_true_class": float(cc[truth].mean()),
            "coupling_to_each_other_class": float(cc[~truth].mean()),
            "share_routed_mostly_to_true_class": float(stats[r]["top_share"].mean()),
            "true_class_coupling_percentiles_5_50_95": [p5, p50, p95],
        }

    examples = [int(np.flatnonzero(y == digit)[0]) for digit in (3, 7, 4, 9)]
    plt.rcParams.update({"font.size": 10})
    fig = plt.figure(figsize=(9.5, 9.2))
    outer = fig.add_gridspec(3, 1, height_ratios=(0.55, 1.2, 1.3), hspace=0.55)
    top = outer[0].subgridspec(1, 4)
    middle = outer[1].subgridspec(1, 4, wspace=0.12)
    bottom = outer[2].subgridspec(1, 2, wspace=0.28)
    shown = ITERATIONS[1:]  # r = 1 is exactly uniform: nothing to show
    limit = max(
        abs(stats[r]["class_coupling"][i] - uniform).max()
        for r in shown
        for i in examples
    )
    for column, index in enumerate(examples):
        image_ax = fig.add_subplot(top[0, column])
        image_ax.imshow(x[index, ..., 0], cmap="gray_r")
        image_ax.set_title(f"test digit #{index}: a {y[index]}", fontsize=10)
        image_ax.axis("off")
        bars_ax = fig.add_subplot(middle[0, column])
        width = 0.4
        for k, r in enumerate(shown):
            deviation = 100 * (stats[r]["class_coupling"][index] - uniform)
            bars = bars_ax.bar(
                np.arange(num_classes) + (k - 0.5) * width,
                deviation,
                width=width,
                color=COLORS[k + 1],
                label=f"r = {r}",
            )
            bars[y[index]].set_edgecolor("#ff8f00")
            bars[y[index]].set_linewidth(1.5)
        bars_ax.axhline(0, color="0.3", lw=0.8)
        bars_ax.set_xticks(range(num_classes))
        bars_ax.set_ylim(-35 * limit, 112 * limit)
        bars_ax.set_xlabel("digit capsule j")
        bars_ax.tick_params(labelsize=9)
        if column == 0:
            bars_ax.set_ylabel("mean $c_{ij}$ − 1/10\n(percentage points)")
            bars_ax.legend(fontsize=9, loc="upper left")
        else:
            bars_ax.set_yticklabels([])

    hist_ax = fig.add_subplot(bottom[0, 0])
    for k, r in enumerate(shown):
        hist_ax.hist(
            stats[r]["true_coupling"].ravel(),
            bins=60,
            weights=stats[r]["weights"].ravel() / n,
            histtype="step",
            lw=1.8,
            color=COLORS[k + 1],
            label=f"r = {r}",
        )
    hist_ax.axvline(uniform, color="0.3", ls=":", lw=1.2, label="r = 1: all 1/10")
    hist_ax.set_xlabel("coupling $c_{ij}$ to the true class j")
    hist_ax.set_yticks([])
    hist_ax.set_title(
        f"all primary capsules, {n} test digits\n(weighted by length)", fontsize=10
    )
    hist_ax.legend(fontsize=9, loc="upper right")
    hist_ax.set_ylim(0, hist_ax.get_ylim()[1] * 1.35)

    share_ax = fig.add_subplot(bottom[0, 1])
    shares = [
        summary["iterations"][str(r)]["share_routed_mostly_to_true_class"]
        for r in ITERATIONS
    ]
    positions = np.arange(len(ITERATIONS))
    share_ax.bar(positions, [100 * s for s in shares], 0.6, color=COLORS)
    share_ax.axhline(100 * uniform, color="0.3", ls=":", lw=1.2)
    share_ax.text(positions[0] + 0.4, 100 * uniform + 2, "chance", fontsize=9)
    for p, r, s in zip(positions, ITERATIONS, shares):
        label = "tie" if r == 1 else f"{s:.0%}"
        share_ax.text(p, 100 * s + 2, label, ha="center", fontsize=9)
    share_ax.set_xticks(
        positions,
        [
            f"r = {r}\nacc {summary['iterations'][str(r)]['accuracy']:.1%}"
            for r in ITERATIONS
        ],
    )
    share_ax.set_ylim(0, 100)
    share_ax.set_ylabel("% of primary capsules")
    share_ax.set_title(
        "largest coupling goes to the true class\n(weighted by length)", fontsize=10
    )
    fig.suptitle(
        "Coupling coefficients of a trained CapsNet after r routing iterations",
        fontsize=12,
        y=0.95,
    )
    _savefig(fig, out_dir / "coupling.png")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "mnist.npz"
    )
    parser.add_argument(
        "--model", type=Path, help="a trained .keras model with a RoutingCapsule"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "assets" / "concepts"
    )
    parser.add_argument("--train-samples", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-coupling", action="store_true")
    parser.add_argument(
        "--only",
        action="append",
        choices=FIGURES,
        help="make only this figure (repeat for several); default: all",
    )
    parser.add_argument(
        "--save-model",
        type=Path,
        default=ROOT / "runs" / "figures" / "small_capsnet.keras",
        help="where the model trained here is saved",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    selected = set(args.only or FIGURES)
    if args.skip_coupling:
        selected.discard("coupling")
    for name, make in (
        ("squash", squash_figure),
        ("margin_loss", margin_loss_figure),
        ("em_routing", em_routing_figure),
    ):
        if name in selected:
            make(args.out)
    if "coupling" not in selected:
        return 0

    x_train, y_train, x_test, y_test = load_mnist(args.data)
    if args.model:
        try:  # Registers the CapsNet model class, for files saved from one.
            import keras_capsules.models  # noqa: F401
        except ImportError:
            pass

        model = keras.saving.load_model(args.model)
        source = f"{args.model.name}"
        sidecar = args.model.with_suffix(".json")
        if sidecar.exists():  # written below, next to a model trained here
            source = json.loads(sidecar.read_text())["source"]
    else:
        model = train_small_capsnet(
            x_train, y_train, args.train_samples, args.epochs, args.seed
        )
        source = (
            "small CapsNet (Conv2D 64 9x9, PrimaryCapsule(16, 8), RoutingCapsule(10, 16)) "
            f"trained {args.epochs} epochs on {args.train_samples} MNIST images"
        )
        args.save_model.parent.mkdir(parents=True, exist_ok=True)
        model.save(args.save_model)
        args.save_model.with_suffix(".json").write_text(json.dumps({"source": source}))
        print(f"saved the trained model to {args.save_model} (reuse it with --model)")
    x, y = x_test[: args.test_samples], y_test[: args.test_samples]
    stats = coupling_statistics(model, x, y)
    summary = coupling_figure(x, y, stats, args.out, source)
    summary["backend"] = keras.backend.backend()
    summary["command"] = "python scripts/docs/make_figures.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    (args.out / "coupling.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
