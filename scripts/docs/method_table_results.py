"""The method table: every model of the package, side by side.

`benchmarks/method_table.py` measures every model on the same data and
budget and writes `docs/assets/method_table/metrics.json`; `rows` reads it
(or, until a real run is committed, each model's published run and
benchmark, each row saying its budget), `render` makes the Markdown table
that the README and the docs show, and the benchmark script draws its chart
from the same rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

METRICS = "docs/assets/method_table/metrics.json"
CHART = "docs/assets/method_table/method_table.png"
BACKENDS = ("tensorflow", "torch", "jax")
BACKEND_NAMES = {"tensorflow": "TensorFlow", "torch": "PyTorch", "jax": "JAX"}

# Each model's published run (`metrics.json` of its example) and the
# benchmark that timed it: (results file, bench name, what was timed).
PUBLISHED = {
    "CapsNet": {
        "run": "docs/assets/example/metrics.json",
        "bench": ("docs/assets/benchmarks/results.json", "capsnet", "batch 100"),
    },
    "EfficientCapsNet": {
        "run": "docs/assets/efficient_capsnet/metrics.json",
        "bench": (
            "docs/assets/benchmarks/capsule-methods/results.json",
            "efficient-capsnet",
            "with its decoder, batch 16",
        ),
    },
    "MatrixCapsNet": {
        "run": "docs/assets/matrix_capsnet/metrics.json",
        "bench": (
            "docs/assets/benchmarks/capsule-methods/results.json",
            "matrix-capsnet",
            "the smallNORB network `MatrixCapsNet()`, 32x32, batch 16",
        ),
    },
}


def capsule_models() -> dict[str, type]:
    """Every model class of `keras_capsules.models` that has a recipe.

    Found by walking the package's public names, so a model added there
    joins the table without a change here.
    """
    import keras_capsules.models
    from keras_capsules.models import TrainingRecipe

    found = {}
    for name in keras_capsules.models.__all__:
        value = getattr(keras_capsules.models, name)
        recipe = getattr(value, "recipe", None)
        if isinstance(value, type) and isinstance(recipe, TrainingRecipe):
            found[name] = value
    return found


def recipe_text(recipe: Any) -> str:
    """A recipe in a few words: `Adam 1e-3 x 0.9/epoch, batch 100, 10 epochs`."""
    parts = [f"Adam {recipe.learning_rate:g}"]
    if recipe.decay_per_epoch != 1.0:
        parts[0] += f" × {recipe.decay_per_epoch:g}/epoch"
    if recipe.min_learning_rate:
        parts[0] += f" (floor {recipe.min_learning_rate:g})"
    parts.append(f"batch {recipe.batch_size}")
    parts.append(f"{recipe.epochs} epochs")
    return ", ".join(parts)


def _read(repo: Path, relative: str) -> Any:
    path = repo / relative
    return json.loads(path.read_text()) if path.exists() else None


def _benchmark(repo: Path, results: str, bench: str) -> dict[str, dict]:
    """Per backend: the default Keras contender's train/infer speed, memory."""
    data = _read(repo, results)
    if data is None:
        return {}
    default_batch = data.get("settings", {}).get("batch")
    out: dict[str, dict] = {}
    for row in data["rows"]:
        if row["bench"] != bench or row["contender"] != "keras":
            continue
        if row["process"] not in BACKENDS:
            continue
        entry = out.setdefault(row["process"], {})
        entry[f"{row['phase']}_images_per_s"] = row["images_per_s"]
        if row["phase"] == "train":
            per_image = row.get("peak_rss_per_image_mb")
            batch = row.get("batch", default_batch)
            if per_image is None and row.get("peak_rss_delta_mb") and batch:
                per_image = row["peak_rss_delta_mb"] / batch
            entry["peak_rss_per_image_mib"] = per_image
    return out


def _published_run(repo: Path, relative: str) -> dict | None:
    metrics = _read(repo, relative)
    if metrics is None:
        return None
    return {
        "test_accuracy": metrics["test_accuracy"],
        "test_samples": metrics["test_samples"],
        "epochs": metrics["epochs"],
        "train_samples": metrics["train_samples"],
        "backend": metrics["backend"],
        "weights": metrics["parameters"],
        "source": relative,
    }


def measured(repo: Path) -> dict | None:
    """The committed same-budget run, or `None` (none, or a smoke run)."""
    data = _read(repo, METRICS)
    if data is None or data.get("settings", {}).get("smoke"):
        return None
    return data


def rows(repo: Path) -> list[dict]:
    """One row per model of the package, from the committed files."""
    run = measured(repo)
    by_model = {entry["model"]: entry for entry in (run or {}).get("models", [])}
    out = []
    for name, model in capsule_models().items():
        published = PUBLISHED.get(name, {})
        row: dict[str, Any] = {
            "model": name,
            "recipe": recipe_text(model.recipe),
            "published": _published_run(repo, published["run"])
            if "run" in published
            else None,
        }
        if run is not None:
            entry = by_model.get(name, {})
            row["same_budget"] = entry.get("accuracy")
            row["weights"] = entry.get("trainable_weights")
            row["speed"] = entry.get("backends", {})
            row["speed_note"] = f"`{METRICS}`, batch of the recipe"
        else:
            row["same_budget"] = None
            row["weights"] = (row["published"] or {}).get("weights")
            if "bench" in published:
                results, bench, what = published["bench"]
                row["speed"] = _benchmark(repo, results, bench)
                row["speed_note"] = f"{what} (`{results}`)"
            else:
                row["speed"] = {}
                row["speed_note"] = ""
        out.append(row)
    return out


def _accuracy(run: dict | None) -> str:
    if not run:
        return "not measured yet"
    budget = f"{run['epochs']} epoch(s) × {run['train_samples']:,} images"
    return (
        f"**{run['test_accuracy']:.2%}** on {run['test_samples']:,} test images "
        f"after {budget}, {BACKEND_NAMES.get(run['backend'], run['backend'])}"
    )


def _per_backend(speed: dict, key: str, template: str) -> str:
    cells = []
    for backend in BACKENDS:
        value = speed.get(backend, {}).get(key)
        cells.append("–" if value is None else template.format(value))
    return " / ".join(cells)


def render(repo: Path, link: Callable[[str], str]) -> str:
    """The method table in Markdown, with its chart and where it comes from."""
    table = rows(repo)
    run = measured(repo)
    header = [
        "model",
        "test accuracy (budget)" if run is None else "test accuracy, same budget",
        "weights",
        "train images/s (TF / PyTorch / JAX)",
        "inference images/s (TF / PyTorch / JAX)",
        "peak MiB per training image (TF / PyTorch / JAX)",
        "recipe (`model.recipe`)",
        "timed",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in table:
        accuracy = _accuracy(row["same_budget"] if run else row["published"])
        if run is not None and row["published"]:
            accuracy += f"; published: {_accuracy(row['published'])}"
        weights = f"{row['weights']:,}" if row["weights"] else "–"
        lines.append(
            "| "
            + " | ".join(
                [
                    f"`{row['model']}`",
                    accuracy,
                    weights,
                    _per_backend(row["speed"], "train_images_per_s", "{:,.0f}"),
                    _per_backend(row["speed"], "infer_images_per_s", "{:,.0f}"),
                    _per_backend(row["speed"], "peak_rss_per_image_mib", "{:,.1f}"),
                    row["recipe"],
                    row["speed_note"] or "not timed yet",
                ]
            )
            + " |"
        )
    out = []
    if (repo / CHART).exists():
        out.append(
            f"![The method table: accuracy and speed per model]({link(CHART)})\n"
        )
    out.append("\n".join(lines) + "\n")
    if run is None:
        out.append(
            "Each row is that model's published run and benchmark, at its own "
            "budget: the run on the same data and budget for every model "
            "(`python benchmarks/method_table.py`) is not committed yet. "
            "Weights: those of the run's model; speeds: the default Keras model "
            "on each backend, forward, backward and Adam on one batch "
            "(training) or a forward pass (inference); – : not measured. "
            + _machines(repo)
        )
    else:
        settings = run["settings"]
        out.append(
            f"Same data and budget for every model: {settings['epochs']} epoch(s) "
            f"on {settings['train_samples']:,} MNIST training images, tested on "
            f"{settings['test_samples']:,}, on "
            f"{BACKEND_NAMES.get(settings['accuracy_backend'])}; speeds per backend, "
            f"each in its own process. Machine: {run['machine']['description']}.\n"
        )
    return "\n".join(out)


def _machines(repo: Path) -> str:
    """The machines of the published files, each named once."""
    machines: dict[str, list[str]] = {}
    for published in PUBLISHED.values():
        metrics = _read(repo, published["run"])
        if metrics and metrics.get("machine"):
            machines.setdefault(metrics["machine"], []).append(
                f"the run of {metrics['model']}"
            )
    for results in sorted({p["bench"][0] for p in PUBLISHED.values()}):
        data = _read(repo, results)
        if data:
            machine = data["machine"]
            described = (
                f"{machine['logical_cpus']} CPU cores ({machine['cpu_model']}), "
                f"measured on the {machine['device'].upper()}, {data['date'][:10]}"
            )
            machines.setdefault(described, []).append(f"`{results}`")
    return (
        "Machines: "
        + "; ".join(
            f"{', '.join(what)}: {machine}" for machine, what in machines.items()
        )
        + ".\n"
    )
