"""Does EM routing learn with 1, 2 and 3 iterations? A short MNIST measurement.

    KERAS_BACKEND=torch python benchmarks/em_iterations.py \
        --data mnist.npz --routing-iterations 3

Trains the paper's small `MatrixCapsNet` (A=64, B=8, C=D=16, 28x28 MNIST
digits, 10 classes) for one epoch on the first `--train-samples` training
images (Adam, spread loss at a fixed margin), then prints the accuracy on the
first `--test-samples` test images. Before and after training it prints, for
every routing layer and every iteration `t` of its EM routing, statistics of
the assignments `R` that the M-step of iteration `t` uses (on
`--stats-samples` training images):

- `entropy`: a child's assignment entropy over all the parents it feeds,
  divided by the log of their number (1 = uniform, 0 = one-hot), the mean
  over the children with activation above 0.01;
- `eff`: effective children of a parent, `(sum_i R_ij a_i)^2 / sum_i (R_ij
  a_i)^2` (1 = a parent fitted to a single child), the median and the 5th
  percentile over the parents;
- `sigma2`: the 1st percentile, median and maximum of the M-step's
  variances `sigma_j^h` (epsilon included), over parents and entries;
- `data`: the median amount of data `sum_i R_ij a_i` of a parent;

then the class activations (min, mean, max: near 1 means saturated) and
the gradient norm of the loss with respect to each layer's weights on one
batch. The statistics are recomputed in NumPy from the votes each routing
layer receives (recorded in a forward pass) and the assignments the
package's routing returns with `t` iterations, so they measure the package.

PyTorch is the fastest backend for EM routing on a CPU (about 25 train
images/s at one thread for this model); pin the process to a core
(`taskset -c 0`) and to one thread (`OMP_NUM_THREADS=1`) on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

LAYERS = ("conv_capsule_1", "conv_capsule_2", "class_capsule")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Statistics printed: see the module docstring.",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="MNIST .npz (x_train, y_train, ...)"
    )
    parser.add_argument("--routing-iterations", type=int, default=3)
    parser.add_argument(
        "--final-inverse-temperature",
        type=float,
        default=0.1,
        help="lambda_final of every routing layer (default 0.1)",
    )
    parser.add_argument("--epsilon", type=float, default=None, help="routing epsilon")
    parser.add_argument("--train-samples", type=int, default=3000)
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--stats-samples", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--margin", type=float, default=0.2, help="spread margin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-train", action="store_true", help="statistics at initialisation only"
    )
    args = parser.parse_args(argv)
    for name in ("routing_iterations", "train_samples", "test_samples", "batch_size"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    return args


class Recorder:
    """Wraps the routing functions the matrix layers call, keeping their inputs."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.enabled = False

    def install(self) -> None:
        from keras_capsules.layers import class_matrix_capsule, conv_matrix_capsule

        for module, name in (
            (conv_matrix_capsule, "conv_em_routing_by_parent"),
            (class_matrix_capsule, "em_routing"),
        ):
            original = getattr(module, name)

            def wrapper(*args, _original=original, _name=name, **kwargs):
                if self.enabled:
                    self.calls.append((_name, args, kwargs))
                return _original(*args, **kwargs)

            wrapper.original = original
            setattr(module, name, wrapper)


def _np(x) -> np.ndarray:
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def routing_statistics(name: str, args: tuple, kwargs: dict, iterations: int):
    """Per-iteration statistics of one recorded routing call."""
    import keras

    from keras_capsules.ops import _patches
    from keras_capsules.ops.routing import em

    rows = []
    if name == "em_routing":
        votes, activations = _np(args[0]), _np(args[1])
        by_parent = np.swapaxes(votes, -2, -3)  # (B, J, N, P)
        acts = activations  # (B, N)
        epsilon = kwargs["epsilon"]
    else:
        votes, activations = args[0], args[1]
        strides = args[5]
        by_parent = _np(votes)  # (B, OH, OW, J, N, P)
        acts = _np(keras.ops.reshape(activations, by_parent.shape[:3] + (-1,)))
        epsilon = args[8]
    for t in range(1, iterations + 1):
        if name == "em_routing":
            call = dict(kwargs, routing_iterations=t, return_assignments=True)
            _, _, r = em.em_routing(*args[:4], **call)
            r = _np(r)  # (B, N, J)
            entropy_terms = -r * np.log(np.maximum(r, 1e-30))
            child_entropy = entropy_terms.sum(-1)
            fan = r.shape[-1]
            child_acts = acts
            r = np.swapaxes(r, -1, -2)  # (B, J, N)
        else:
            call = list(args[:9])
            call[6] = t
            _, _, r = em.conv_em_routing_by_parent(*call, return_assignments=True)
            field = r  # (B, OH, OW, KH, KW, I, J)
            terms = -field * keras.ops.log(keras.ops.maximum(field, 1e-30))
            child_entropy = _np(
                _patches.fold(keras.ops.sum(terms, axis=-1), strides, "sum")
            )
            counts = _patches.fold(keras.ops.ones_like(field[..., 0]), strides, "sum")
            fan = _np(counts) * field.shape[-1]
            child_acts = _np(
                _patches.fold(
                    keras.ops.reshape(activations, field.shape[:-1]), strides, "max"
                )
            )
            r = _np(r)
            r = r.reshape(r.shape[:3] + (-1, r.shape[-1]))
            r = np.swapaxes(r, -1, -2)  # (B, OH, OW, J, N)
        covered = (fan > 1) & (child_acts > 0.01)
        normalised = child_entropy / np.log(np.maximum(fan, 2))
        weighted = r * acts[..., None, :]
        data = weighted.sum(-1)
        eff = data**2 / np.maximum((weighted**2).sum(-1), 1e-300)
        share = weighted / (data[..., None] + epsilon)
        mean = np.einsum("...jn,...jnp->...jp", share, by_parent)
        var = (
            np.einsum(
                "...jn,...jnp->...jp", share, (by_parent - mean[..., None, :]) ** 2
            )
            + epsilon
        )
        rows.append(
            dict(
                t=t,
                entropy=float(np.mean(normalised[covered])),
                eff_median=float(np.median(eff)),
                eff_p5=float(np.percentile(eff, 5)),
                sigma2=(
                    float(np.percentile(var, 1)),
                    float(np.median(var)),
                    float(np.max(var)),
                ),
                data=float(np.median(data)),
            )
        )
    return rows


def gradient_norms(model, loss_fn, x, y) -> dict[str, float]:
    """Norm of the loss's gradient with respect to each layer's weights."""
    import keras

    backend = keras.backend.backend()
    weights = model.trainable_weights
    if backend == "torch":
        import torch

        loss = loss_fn(keras.ops.convert_to_tensor(y), model(x))
        grads = torch.autograd.grad(loss, [w.value for w in weights])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x))
        grads = tape.gradient(loss, weights)
    else:
        import jax

        values = [w.value for w in weights]
        others = [w.value for w in model.non_trainable_weights]

        def objective(trainable):
            out, _ = model.stateless_call(trainable, others, x)
            return loss_fn(y, out)

        grads = jax.grad(objective)(values)
    norms: dict[str, float] = {}
    for w, g in zip(weights, grads):
        layer = w.path.split("/")[-2] if "/" in w.path else w.path
        norms[layer] = norms.get(layer, 0.0) + float(np.sum(_np(g) ** 2))
    return {k: v**0.5 for k, v in norms.items()}


def report(title, model, recorder, loss_fn, x, y, iterations) -> None:
    import keras

    recorder.calls.clear()
    recorder.enabled = True
    activations = _np(model(x))
    recorder.enabled = False
    print(f"\n== {title} ==")
    print(
        "class activations: min {:.4f} mean {:.4f} max {:.4f}; target minus best "
        "other (mean): {:+.4f}".format(
            activations.min(),
            activations.mean(),
            activations.max(),
            float(
                np.mean(np.sum(activations * y, -1) - np.max(activations - 2 * y, -1))
            ),
        )
    )
    print(f"{'layer':<15} t  entropy  eff(med/p5)    sigma2 (p1 / median / max)   data")
    for layer, (name, args, kwargs) in zip(LAYERS, recorder.calls):
        for row in routing_statistics(name, args, kwargs, iterations):
            s = row["sigma2"]
            print(
                f"{layer:<15} {row['t']}  {row['entropy']:.3f}   "
                f"{row['eff_median']:7.2f} / {row['eff_p5']:6.2f}  "
                f"{s[0]:.2e} / {s[1]:.2e} / {s[2]:.2e}  {row['data']:.3g}"
            )
    norms = gradient_norms(model, loss_fn, x, keras.ops.convert_to_numpy(y))
    print("gradient norms: " + ", ".join(f"{k} {v:.3g}" for k, v in norms.items()))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import keras

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    from keras_capsules.losses import SpreadLoss
    from keras_capsules.models import MatrixCapsNet

    recorder = Recorder()
    recorder.install()
    keras.utils.set_random_seed(args.seed)
    with np.load(args.data) as data:
        x_train = data["x_train"][: args.train_samples]
        y_train = data["y_train"][: args.train_samples]
        x_test = data["x_test"][: args.test_samples]
        y_test = data["y_test"][: args.test_samples]
    x_train = (x_train.astype("float32") / 255.0)[..., None]
    x_test = (x_test.astype("float32") / 255.0)[..., None]
    y_train = np.eye(10, dtype="float32")[y_train.astype("int64")]
    y_test = np.eye(10, dtype="float32")[y_test.astype("int64")]

    routing = dict(
        routing_iterations=args.routing_iterations,
        final_inverse_temperature=args.final_inverse_temperature,
    )
    model = MatrixCapsNet(
        image_shape=(28, 28, 1),
        num_classes=10,
        conv_filters=64,
        primary_capsule_types=8,
        conv_capsule_types=(16, 16),
        **routing,
    )
    if args.epsilon is not None:
        for layer in (*model.conv_capsules, model.class_capsule):
            layer.epsilon = args.epsilon
    loss = SpreadLoss(margin=args.margin)
    print(
        f"backend {keras.backend.backend()}, {model.count_params()} weights, "
        f"iterations {args.routing_iterations}, lambda_final "
        f"{args.final_inverse_temperature}, margin {args.margin}, lr {args.lr}, "
        f"train {len(x_train)}, test {len(x_test)}, seed {args.seed}"
    )
    stats_x = x_train[: args.stats_samples]
    stats_y = y_train[: args.stats_samples]
    report("at initialisation", model, recorder, loss, stats_x, stats_y,
           args.routing_iterations)  # fmt: skip
    if args.no_train:
        return 0

    model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=loss)
    started = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=args.batch_size, epochs=1, shuffle=True, verbose=0
    )
    seconds = time.perf_counter() - started
    losses = history.history["loss"]
    print(
        f"\ntrained {len(x_train)} images in {seconds:.0f} s "
        f"({len(x_train) / seconds:.1f} images/s), final loss {losses[-1]:.4f}"
    )
    report("after training", model, recorder, loss, stats_x, stats_y,
           args.routing_iterations)  # fmt: skip
    predictions = model.predict(x_test, batch_size=100, verbose=0)
    accuracy = float(np.mean(np.argmax(predictions, -1) == np.argmax(y_test, -1)))
    print(f"\ntest accuracy: {accuracy:.4f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
