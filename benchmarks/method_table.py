"""The method table: every model of the package on the same data and budget.

For every model of `keras_capsules.models` that has a `TrainingRecipe`
(found by walking the package, so a new model joins by itself), on MNIST:
the test accuracy after `--epochs` epochs on the training images with the
model's recipe (`compile()`, its batch size and schedules; no
augmentation), the trainable weights, and on each backend, in a subprocess
of its own, the training and inference images/s and the peak memory per
training image. Writes `metrics.json`, `table.md` (the table that the
README shows, rendered by `scripts/docs/render_numbers.py`) and
`method_table.png` into `--output`.

    python benchmarks/method_table.py                 # every backend: hours on a CPU
    python benchmarks/method_table.py --epochs 3 --data path/to/mnist.npz
    python benchmarks/method_table.py --smoke         # seconds: checks the code
    python benchmarks/method_table.py --chart-only    # redraws the chart

A training step is `train_on_batch` on one fixed batch of the recipe's
size (forward, backward, the optimizer update), inference `predict_on_batch`
on the same images; each is warmed up first (tracing, compilation), then
the best of `--repeats` timings of `--steps` steps is kept. Peak memory is
the rise of the process's peak resident memory (`VmHWM`, reset through
`/proc/self/clear_refs`) over the memory after the model is built and
warmed up, during the timed training steps, divided by the batch size.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "scripts" / "docs"))

import method_table_results  # noqa: E402

BACKENDS = method_table_results.BACKENDS
OUTPUT = REPO / "docs" / "assets" / "method_table"
MNIST_SHAPE = (28, 28, 1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--epochs", type=int, default=1, help="training epochs for every model (1)"
    )
    parser.add_argument(
        "--data", type=Path, help="MNIST-like .npz (default: keras.datasets.mnist)"
    )
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument(
        "--accuracy-backend",
        choices=BACKENDS,
        help="the backend that trains for the accuracy column (default: the first)",
    )
    parser.add_argument(
        "--models", help="comma-separated class names (default: every model)"
    )
    parser.add_argument("--train-samples", type=int, help="the first N training images")
    parser.add_argument("--test-samples", type=int, help="the first N test images")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repeats, best kept"
    )
    parser.add_argument("--output", type=Path, help=f"default: {OUTPUT}")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny random data, one step, the current backend only, into "
        "runs/method_table_smoke: checks the code, measures nothing",
    )
    parser.add_argument(
        "--chart-only", action="store_true", help="redraw the chart of --output"
    )
    parser.add_argument(
        "--timeout", type=float, default=6 * 3600, help="per backend, s"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error(f"--epochs must be at least 1, received {args.epochs}")
    if args.smoke:
        current = os.environ.get("KERAS_BACKEND", "tensorflow")
        args.backends = (
            current if args.backends == ",".join(BACKENDS) else args.backends
        )
        args.train_samples = args.train_samples or 2
        args.test_samples = args.test_samples or 2
        args.steps = args.repeats = 1
        args.output = args.output or REPO / "runs" / "method_table_smoke"
    args.output = args.output or OUTPUT
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown --backends {unknown}; expected some of {BACKENDS}")
    args.accuracy_backend = args.accuracy_backend or args.backends[0]
    return args


# --- the worker: one backend, every model ---------------------------------------


def _load_mnist(args: argparse.Namespace):
    import numpy as np

    if args.smoke and args.data is None:
        rng = np.random.default_rng(0)
        x = rng.random((args.train_samples + args.test_samples, *MNIST_SHAPE))
        y = rng.integers(0, 10, len(x))
        split = args.train_samples
        return (x[:split], y[:split]), (x[split:], y[split:])
    if args.data is not None:
        with np.load(args.data) as data:
            train = data["x_train"], data["y_train"]
            test = data["x_test"], data["y_test"]
    else:
        import keras

        train, test = keras.datasets.mnist.load_data()

    def prepare(images, labels, count):
        images, labels = images[:count], labels[:count]
        images = images.reshape(-1, *MNIST_SHAPE).astype("float32") / 255.0
        return images, labels.astype("int32")

    return prepare(*train, args.train_samples), prepare(*test, args.test_samples)


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _best_rate(step, images: int, steps: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        best = min(best, time.perf_counter() - start)
    return images * steps / best


def _measure(name: str, cls, args: argparse.Namespace, train, test) -> dict:
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    recipe = cls.recipe
    model = cls(image_shape=MNIST_SHAPE, num_classes=10)
    model.compile()
    batch = recipe.batch_size if not args.smoke else min(recipe.batch_size, 2)
    x, y = train[0][:batch], train[1][:batch]
    if len(x) < batch:  # tiny data: repeat it up to one batch
        repeat = -(-batch // len(x))
        x, y = (
            np.concatenate([x] * repeat)[:batch],
            np.concatenate([y] * repeat)[:batch],
        )
    entry: dict = {
        "model": name,
        "trainable_weights": int(
            sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        ),
        "batch": batch,
    }
    model.train_on_batch(x, y)  # warm-up: tracing, compilation
    model.predict_on_batch(x)
    before = _rss_kib("VmRSS")
    reset = _reset_peak()
    entry["train_images_per_s"] = _best_rate(
        lambda: model.train_on_batch(x, y), batch, args.steps, args.repeats
    )
    peak = _rss_kib("VmHWM") if reset else None
    if peak is not None and before is not None:
        entry["peak_rss_per_image_mib"] = max(peak - before, 0) / 1024 / batch
    entry["infer_images_per_s"] = _best_rate(
        lambda: model.predict_on_batch(x), batch, args.steps, args.repeats
    )
    if args.accuracy:
        # A fresh model, but for a smoke run: the traced steps are reused.
        fresh = model if args.smoke else cls(image_shape=MNIST_SHAPE, num_classes=10)
        if not args.smoke:
            fresh.compile()
        start = time.perf_counter()
        fresh.fit(
            train[0],
            train[1],
            batch_size=batch,
            epochs=args.epochs,
            shuffle=True,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        scores = fresh.predict_on_batch(test[0]) if args.smoke else None
        if scores is None:
            scores = fresh.predict(test[0], batch_size=max(batch, 100), verbose=0)
        scores = keras.ops.convert_to_numpy(scores)
        accuracy = float(np.mean(np.argmax(scores, axis=-1) == test[1]))
        entry["accuracy"] = {
            "test_accuracy": accuracy,
            "test_samples": len(test[0]),
            "epochs": args.epochs,
            "train_samples": len(train[0]),
            "backend": keras.backend.backend(),
            "seconds": seconds,
        }
    return entry


def worker(args: argparse.Namespace) -> None:
    import keras

    import keras_capsules

    train, test = _load_mnist(args)
    found = method_table_results.capsule_models()
    names = args.models.split(",") if args.models else list(found)
    results = []
    for name in names:
        try:
            results.append(_measure(name, found[name], args, train, test))
        except Exception as error:  # one model's failure is a row, not the run
            results.append({"model": name, "error": f"{type(error).__name__}: {error}"})
    versions = {
        "keras": keras.__version__,
        "keras_capsules": keras_capsules.__version__,
    }
    Path(args.worker).write_text(json.dumps({"versions": versions, "models": results}))


# --- the parent: one subprocess per backend ------------------------------------


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = os.cpu_count()
    return {
        "platform": platform.platform(),
        "cpu_model": cpu,
        "logical_cpus": cores,
        "description": f"{cores} CPU cores ({cpu}), {platform.system()}",
    }


def _run_backend(backend: str, args: argparse.Namespace, argv: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, __file__, *argv, "--worker", str(out)]
        if backend == args.accuracy_backend:
            command.append("--accuracy")
        env = {**os.environ, "KERAS_BACKEND": backend}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        started = time.perf_counter()
        result = subprocess.run(
            command, env=env, timeout=args.timeout, capture_output=True, text=True
        )
        if result.returncode != 0 or not out.exists():
            tail = (result.stderr or result.stdout)[-2000:]
            return {"error": f"exit {result.returncode}: {tail}"}
        data = json.loads(out.read_text())
        data["seconds"] = time.perf_counter() - started
        return data


def collect(args: argparse.Namespace, argv: list[str]) -> dict:
    per_backend = {b: _run_backend(b, args, argv) for b in args.backends}
    models: dict[str, dict] = {}
    for backend, data in per_backend.items():
        for entry in data.get("models", []):
            row = models.setdefault(
                entry["model"], {"model": entry["model"], "backends": {}}
            )
            if "error" in entry:
                row["backends"][backend] = {"error": entry["error"]}
                continue
            row["trainable_weights"] = entry["trainable_weights"]
            row["backends"][backend] = {
                key: entry[key]
                for key in (
                    "train_images_per_s",
                    "infer_images_per_s",
                    "peak_rss_per_image_mib",
                    "batch",
                )
                if key in entry
            }
            if "accuracy" in entry:
                row["accuracy"] = entry["accuracy"]
    found = method_table_results.capsule_models()
    for name, row in models.items():
        if name in found:
            row["recipe"] = method_table_results.recipe_text(found[name].recipe)
    accuracy = next(iter(models.values()), {}).get("accuracy", {})
    return {
        "schema_version": 1,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "settings": {
            "epochs": args.epochs,
            "train_samples": accuracy.get("train_samples", args.train_samples),
            "test_samples": accuracy.get("test_samples", args.test_samples),
            "accuracy_backend": args.accuracy_backend,
            "backends": args.backends,
            "steps": args.steps,
            "repeats": args.repeats,
            "smoke": args.smoke,
            "data": "random images" if args.smoke and args.data is None else "MNIST",
        },
        "versions": {b: d.get("versions") for b, d in per_backend.items()},
        "errors": {b: d["error"] for b, d in per_backend.items() if "error" in d},
        "seconds": {b: d.get("seconds") for b, d in per_backend.items()},
        "models": list(models.values()),
    }


def draw_chart(table: list[dict], path: Path) -> None:
    """Accuracy per model, and training images/s per model and backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [row["model"] for row in table]
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
    accuracies, labels = [], []
    for row in table:
        run = row.get("same_budget") or row.get("published") or {}
        accuracies.append(100 * run.get("test_accuracy", 0.0))
        labels.append(
            f"{run['epochs']} ep. × {run['train_samples']:,}" if run else "not run"
        )
    bars = left.barh(names, accuracies, color="#5e35b1")
    for bar, label, value in zip(bars, labels, accuracies):
        left.text(
            value + 0.5, bar.get_y() + bar.get_height() / 2,
            f"{value:.2f} % ({label})", va="center", fontsize=8,
        )  # fmt: skip
    left.set_xlim(0, 135)
    left.set_xlabel("MNIST test accuracy (%)")
    left.set_title("Accuracy (budget per bar)")
    left.invert_yaxis()
    width = 0.8 / len(BACKENDS)
    colours = {"tensorflow": "#ff8f00", "torch": "#c62828", "jax": "#1565c0"}
    for index, backend in enumerate(BACKENDS):
        values = [
            row["speed"].get(backend, {}).get("train_images_per_s") or 0.0
            for row in table
        ]
        positions = [i + (index - 1) * width for i in range(len(table))]
        right.barh(
            positions, values, height=width, color=colours[backend],
            label=method_table_results.BACKEND_NAMES[backend],
        )  # fmt: skip
    right.set_yticks(range(len(table)), names)
    right.set_xscale("log")
    right.set_xlabel("training images/s (log scale)")
    right.set_title("Training speed per backend (CPU)")
    right.invert_yaxis()
    right.legend(fontsize=8, loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_outputs(args: argparse.Namespace, data: dict | None) -> None:
    args.output.mkdir(parents=True, exist_ok=True)
    if data is not None:
        (args.output / "metrics.json").write_text(json.dumps(data, indent=2) + "\n")
    table_md = args.output / "table.md"
    if not table_md.exists():
        table_md.write_text("<!-- numbers:method-table -->\n<!-- /numbers -->\n")
    if args.output.resolve() == OUTPUT.resolve():
        rows = method_table_results.rows(REPO)
        draw_chart(rows, REPO / method_table_results.CHART)
        import render_numbers

        render_numbers.main([])
    elif data is not None:  # elsewhere (a smoke run): a chart of this run only
        draw_chart(_rows_of(data), args.output / "method_table.png")


def _rows_of(data: dict) -> list[dict]:
    return [
        {
            "model": row["model"],
            "same_budget": row.get("accuracy"),
            "speed": row.get("backends", {}),
        }
        for row in data["models"]
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.chart_only:
        write_outputs(args, None)
        return 0
    data = collect(args, argv)
    write_outputs(args, data)
    for backend, error in data["errors"].items():
        print(f"{backend}: {error}", file=sys.stderr)
    for row in data["models"]:
        accuracy = row.get("accuracy", {}).get("test_accuracy")
        print(
            row["model"],
            "accuracy" if accuracy is None else f"accuracy {accuracy:.4f}",
            {
                b: round(v.get("train_images_per_s", 0), 1)
                for b, v in row["backends"].items()
            },
        )
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
