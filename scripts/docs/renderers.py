"""The renderings of the measured numbers: metrics files -> Markdown.

Each `render_*` function takes the docs folder and returns the Markdown of
one block (a table, a note) made from the JSON files under `docs/assets/`;
when a file is missing, a "Results pending" admonition (CSS class
`pending`) that names the command that makes it. `render_numbers.py` writes
these blocks into the pages between marker comments, and the MkDocs hook
checks them at build time.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

# Loaded by path (MkDocs, the tests); its sibling modules are imported from here.
sys.path.insert(0, str(Path(__file__).resolve().parent))
import experiment_results  # noqa: E402
from experiment_results import (  # noqa: E402
    accuracy_per_epoch,
    command_block,
    markdown_table,
    readme_command,
)

PENDING_CLASS = "pending"


# A rendered block or value: `<!-- numbers:NAME ARGS -->TEXT<!-- /numbers -->`,
# TEXT on the marker's line (a value) or on the lines between (a block).
MARKER = re.compile(r"<!-- numbers:(.*?) -->(.*?)<!-- /numbers -->", re.DOTALL)


def strip_markers(markdown: str) -> str:
    """The Markdown with the marker comments left out, their text kept."""
    return MARKER.sub(lambda match: match.group(2).strip("\n"), markdown)


def _recipe_epochs(model: str) -> int:
    import keras_capsules.models

    return getattr(keras_capsules.models, model).recipe.epochs


def _pending(what: str, how: str) -> str:
    return (
        f'!!! {PENDING_CLASS} "Results pending"\n\n'
        f"    Not in the repository yet: {what}. {how}\n"
    )


def _fmt(value: float, digits: int = 2) -> str:
    """A difference in scientific notation, or 0 for an exact match."""
    if value == 0:
        return "0 (identical)"
    return f"{value:.{digits}e}"


class RenderError(ValueError):
    """A metrics file that cannot be read, or a marker that names nothing."""


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RenderError(f"Cannot read {path}: {error}") from error


# --- renderers: docs_dir -> Markdown -------------------------------------------


def render_coupling(docs_dir: Path) -> str:
    path = docs_dir / "assets" / "concepts" / "coupling.json"
    if not path.exists():
        return _pending(
            "`assets/concepts/coupling.json`",
            "Run `python scripts/docs/make_figures.py --data PATH/TO/mnist.npz`.",
        )
    data = _read_json(path)
    rows = []
    for r, stats in sorted(data["iterations"].items(), key=lambda item: int(item[0])):
        rows.append(
            [
                r,
                f"{stats['accuracy']:.1%}",
                f"{stats['coupling_to_true_class']:.3f}",
                f"{stats['coupling_to_each_other_class']:.3f}",
                f"{stats['share_routed_mostly_to_true_class']:.1%}",
            ]
        )
    table = markdown_table(
        [
            "routing iterations r",
            "test accuracy",
            "mean coupling to the true class",
            "mean coupling to each other class",
            "primary capsules routed mostly to the true class",
        ],
        rows,
    )
    return (
        f"Model: {data['source']}; {data['num_test_digits']} MNIST test digits, "
        f"{data.get('backend', '?')} backend. Means weighted by "
        "\\(\\lVert u_i \\rVert\\); the model was trained with r = 3, and the "
        "accuracy column is that of the same weights routed with r iterations.\n\n"
        + table
    )


def render_example_run(docs_dir: Path, folder: str = "example") -> str:
    directory = docs_dir / "assets" / folder
    metrics_path = directory / "metrics.json"
    if not metrics_path.exists():
        return _pending(
            f"the run of the MNIST example, `assets/{folder}/metrics.json`",
            f"It is made by `examples/capsnet_mnist.py`; see `assets/{folder}/README.md`.",
        )
    metrics = _read_json(metrics_path)
    out = []
    command = readme_command(directory / "README.md", "capsnet_mnist.py")
    if command is None and metrics.get("args"):
        command = _example_command(metrics["args"])
    if command:
        out.append(command_block(command))
    history = metrics.get("history", {})
    # Runs before v0.2 logged the accuracy of the `lengths` output.
    accuracies = history.get("val_accuracy") or history.get("val_lengths_accuracy", [])
    rows = [
        [
            "test accuracy",
            f"**{metrics['test_accuracy']:.2%}** on {metrics['test_samples']:,} test images",
        ],
        [
            "training",
            f"{metrics['epochs']} epochs on {metrics['train_samples']:,} images",
        ],
        *accuracy_per_epoch(accuracies),
        [
            "backend",
            f"{metrics['backend']} (Keras {metrics['keras_version']}), {metrics.get('devices', 1)} device(s)",
        ],
        ["parameters", f"{metrics['parameters']:,}"],
        [
            "time per epoch",
            f"{metrics['seconds_per_epoch']:.1f} s ({metrics['train_images_per_second']:.0f} training images/s)",
        ],
        ["inference", f"{metrics['test_images_per_second']:.0f} test images/s"],
    ]
    out.append(markdown_table(["", "this run"], rows))
    if metrics.get("machine"):
        out.append(f"Machine: {metrics['machine']}.\n")
    return "\n".join(out)


def render_efficient_run(docs_dir: Path) -> str:
    return render_example_run(docs_dir, "efficient_capsnet")


def render_efficient_readme(docs_dir: Path) -> str:
    return render_example_readme(docs_dir, "efficient_capsnet")


# Below this many training images seen (epochs x images), the decoder of the
# example has not learned much yet, and the page says so.
SHORT_RUN_IMAGES = 100_000


def render_example_caveat(docs_dir: Path) -> str:
    metrics_path = docs_dir / "assets" / "example" / "metrics.json"
    if not metrics_path.exists():
        return ""
    metrics = _read_json(metrics_path)
    seen = metrics["epochs"] * metrics["train_samples"]
    planned = metrics.get("args", {}).get("epochs")
    if seen >= SHORT_RUN_IMAGES and planned and metrics["epochs"] < planned:
        return (
            '!!! note "A run in progress"\n\n'
            f"    This run was started for {planned} epochs and is shown after "
            f"{metrics['epochs']}: it checkpoints every epoch and continues when "
            "the same command is run again. The numbers and pictures are those of "
            "the model after the last finished epoch.\n"
        )
    if seen >= SHORT_RUN_IMAGES:
        return ""
    minutes = metrics["seconds_per_epoch"] * metrics["epochs"] / 60
    return (
        '!!! note "A short run"\n\n'
        f"    This run trained for {metrics['epochs']} epochs on "
        f"{metrics['train_samples']:,} images, about {minutes:.0f} minutes on a CPU. "
        f"The capsule lengths already classify {metrics['test_accuracy']:.1%} of the "
        "test set, but the decoder, whose loss is weighted by 0.0005, learns far "
        "more slowly than the classifier: after a run this short its "
        "reconstructions are still close to an average digit, and moving one "
        "capsule dimension barely changes them. The paper's figures come from "
        "training on all 60,000 images for many epochs "
        "(`--epochs 30` without `--train-samples`, best on a GPU).\n"
    )


def render_example_readme(docs_dir: Path, folder: str = "example") -> str:
    """The run's README, folded: how it was made and what it was compared with.

    A `<details>` block, which both the site (`md_in_html`) and a
    repository page show folded; the README's own markers are left out.
    """
    readme = docs_dir / "assets" / folder / "README.md"
    if not readme.exists():
        return ""
    body = []
    for line in strip_markers(readme.read_text()).splitlines():
        if line.startswith("# "):
            continue  # the title: the summary line has its own
        heading = re.match(r"^#{2,6} (.*)$", line)
        body.append(f"**{heading.group(1)}**" if heading else line)
    return (
        '<details markdown="1">\n'
        f"<summary>How this run was made (<code>assets/{folder}/README.md</code>)"
        "</summary>\n\n" + "\n".join(body).strip("\n") + "\n\n</details>\n"
    )


def _example_command(args: dict) -> str:
    parts = ["python examples/capsnet_mnist.py"]
    for flag in (
        "backend",
        "data",
        "epochs",
        "train_samples",
        "test_samples",
        "output_dir",
    ):
        value = args.get(flag)
        if value is not None:
            if flag == "data":
                value = "PATH/TO/" + Path(str(value)).name
            parts.append(f"--{flag.replace('_', '-')} {value}")
    return " ".join(parts)


def render_parity(docs_dir: Path) -> str:
    path = docs_dir / "assets" / "parity" / "parity.json"
    if not path.exists():
        return _pending(
            "the measured cross-backend differences, `assets/parity/parity.json`",
            "They are recorded by running the parity tests once per backend with "
            "`PARITY_RECORD=1`, e.g. `for b in tensorflow torch jax; do "
            "PARITY_RECORD=1 KERAS_BACKEND=$b pytest tests/parity; done`.",
        )
    data = _read_json(path)
    saved_by = data.get("saved_by", {})
    tolerances = data.get("tolerances", {})
    backends = sorted(
        {
            loader
            for report in saved_by.values()
            for loader in report.get("loaded_by", {})
        }
        | set(saved_by)
    )
    out = []
    if data.get("description"):
        out.append(data["description"] + "\n")

    out.append(
        "**Predictions after loading**: the largest absolute difference from the "
        "saving backend's own predictions (tolerance "
        f"{tolerances.get('prediction_max_abs', 1e-4):g}).\n"
    )
    rows = []
    for saver in backends:
        loaded_by = saved_by.get(saver, {}).get("loaded_by", {})
        row = [f"saved by **{saver}**"]
        for loader in backends:
            entry = loaded_by.get(loader)
            row.append(
                _fmt(entry["prediction_max_abs_vs_saver"]) if entry else "not run"
            )
        rows.append(row)
    out.append(markdown_table(["", *[f"loaded by {b}" for b in backends]], rows))

    out.append(
        "**Between two loaders of the same file**: predictions (absolute), the "
        "training loss (absolute) and the weight update of one SGD step "
        "(relative to the largest update; tolerance "
        f"{tolerances.get('update_max_rel', 1e-3):g}).\n"
    )
    rows = []
    for saver, report in saved_by.items():
        for pair, entry in report.get("loader_pairs", {}).items():
            if "error" in entry:
                rows.append([saver, pair, entry["error"], "", ""])
                continue
            rows.append(
                [
                    saver,
                    pair,
                    _fmt(entry["prediction_max_abs"]),
                    _fmt(entry["loss_max_abs"]),
                    f"{_fmt(entry['update_max_rel'])} (`{entry['worst_variable']}`)",
                ]
            )
    out.append(
        markdown_table(
            [
                "file saved by",
                "loaders",
                "predictions",
                "loss",
                "SGD update (worst weight)",
            ],
            rows,
        )
    )

    versions = {}
    keras_versions = set()
    for report in saved_by.values():
        keras_versions.add(report.get("keras_version", "?"))
        for loader, entry in report.get("loaded_by", {}).items():
            versions[loader] = entry.get("framework_version", "?")
    errors = sorted(
        {e for report in saved_by.values() for e in report.get("errors", [])}
    )
    out.append(
        "Measured with Keras "
        + ", ".join(sorted(keras_versions))
        + "; "
        + ", ".join(f"{b} {v}" for b, v in sorted(versions.items()))
        + "."
        + (f" Loaders that failed: {', '.join(errors)}." if errors else "")
        + "\n"
    )
    return "\n".join(out)


def render_benchmarks(docs_dir: Path, folder: str = "assets/benchmarks") -> str:
    """The benchmark's own Markdown report and chart in `folder`, or a table."""
    directory = docs_dir / folder
    results = sorted(directory.glob("*.json")) if directory.exists() else []
    if not results:
        return _pending(
            f"the benchmark results, `{folder}/*.json`",
            "They are made by `python benchmarks/benchmark.py --output docs/"
            + folder
            + "`.",
        )
    out = []
    for path in results:
        data = _read_json(path)
        if isinstance(data, dict) and data.get("settings", {}).get("smoke"):
            out.append(
                '!!! warning "Smoke-test numbers"\n\n'
                f"    `{path.name}` comes from a `--smoke` run (a step or two on a tiny "
                "batch, the default Keras contender and its hand-written baselines), "
                "which checks that the code runs; its timings are not a measurement.\n"
            )
    for chart in sorted(directory.glob("*.png")):
        out.append(f"![Benchmark: {chart.stem}]({folder}/{chart.name})\n")
    reports = sorted(directory.glob("*.md"))
    reports = [r for r in reports if r.name.lower() != "readme.md"]
    if reports:
        for report in reports:
            # One level below this page's "Results" section.
            text = re.sub(
                r"^(#+) ",
                lambda m: "##" + m.group(1) + " ",
                report.read_text(),
                flags=re.M,
            )
            out.append(text.rstrip() + "\n")
    else:
        for path in results:
            out.append(
                _render_benchmark_json(_read_json(path), f"{folder}/{path.name}")
            )
    for path in results:
        method = _read_json(path).get("method") if path.suffix == ".json" else None
        if isinstance(method, dict) and method:
            out.append("### Method, as recorded with the results\n")
            out += [f"- **{key}**: {text}" for key, text in method.items()]
            out.append("")
    return "\n".join(out)


def _render_benchmark_json(data: Any, name: str) -> str:
    """A generic rendering: the machine, then one table of the result rows."""
    out = []
    machine = data.get("machine") if isinstance(data, dict) else None
    if machine:
        if isinstance(machine, dict):
            machine = ", ".join(f"{k}: {v}" for k, v in machine.items())
        out.append(f"Machine: {machine}.\n")
    rows = data.get("results") if isinstance(data, dict) else data
    if isinstance(rows, list) and rows and all(isinstance(row, dict) for row in rows):
        header = list(dict.fromkeys(key for row in rows for key in row))
        body = [[_cell(row.get(key, "")) for key in header] for row in rows]
        out.append(markdown_table(header, body))
    else:
        out.append(f"```json\n{json.dumps(data, indent=2)}\n```\n")
    out.append(f"(from `{name}`)\n")
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# The Keras contenders of the capsule-method benches and their processes.
_METHOD_BENCH_ROWS = (
    ("efficient-capsnet", "keras", "tensorflow", "tensorflow"),
    ("efficient-capsnet", "keras-jit", "tensorflow", "tensorflow, `jit_compile=True`"),
    ("efficient-capsnet", "keras", "torch", "torch"),
    ("efficient-capsnet", "keras", "jax", "jax"),
    ("matrix-capsnet", "keras", "tensorflow", "tensorflow"),
    ("matrix-capsnet", "keras", "torch", "torch"),
    ("matrix-capsnet", "keras", "jax", "jax"),
)


def render_capsule_method_summary(docs_dir: Path) -> str:
    """Keras vs the PyTorch twin per backend, from the capsule-method run."""
    path = docs_dir / "assets" / "benchmarks" / "capsule-methods" / "results.json"
    if not path.exists():
        return _pending(
            "`assets/benchmarks/capsule-methods/results.json`",
            "Run `python benchmarks/benchmark.py --benches "
            "efficient-capsnet,matrix-capsnet --output "
            "docs/assets/benchmarks/capsule-methods`.",
        )
    data = _read_json(path)

    def row(bench: str, contender: str, process: str) -> dict | None:
        for entry in data["rows"]:
            if (entry["bench"], entry["contender"], entry["process"]) == (
                bench,
                contender,
                process,
            ):
                return entry
        return None

    def with_noynn(bench: str, contender: str, process: str, key: str, fmt: str):
        entry = row(bench, contender, process)
        text = fmt.format(entry[key])
        other = row(bench, contender, "jax-noynn") if process == "jax" else None
        if other is not None:
            text += f" ({fmt.format(other[key])})"
        return text

    rows = []
    for bench, contender, process, label in _METHOD_BENCH_ROWS:
        entry, twin = row(bench, contender, process), row(bench, "torch", process)
        if entry is None or twin is None:
            continue
        name = f"{bench} (smallNORB model)" if bench == "matrix-capsnet" else bench
        digits = "{:,.0f}" if entry["images_per_s"] >= 100 else "{:.1f}"
        rows.append(
            [
                name,
                label,
                with_noynn(bench, contender, process, "images_per_s", digits),
                with_noynn(bench, contender, process, "vs_torch", "{:.2f}x"),
                f"{entry['peak_rss_per_image_mb']:.1f} / "
                f"{twin['peak_rss_per_image_mb']:.1f}",
            ]
        )
    table = markdown_table(
        [
            "bench",
            "process",
            "Keras images/s",
            "× torch",
            "peak RSS Δ, MiB per image (Keras / torch)",
        ],
        rows,
    )
    return table + "\n(in parentheses: JAX without YNNPACK fusions.)\n"


def render_breakdown(docs_dir: Path) -> str:
    """Efficient-CapsNet part by part, Keras / the PyTorch twin."""
    path = docs_dir / "assets" / "benchmarks" / "efficient-capsnet-breakdown"
    path = path / "results.json"
    if not path.exists():
        return _pending(
            "`assets/benchmarks/efficient-capsnet-breakdown/results.json`",
            "Run `python benchmarks/efficient_capsnet_breakdown.py`.",
        )
    data = _read_json(path)

    def pair(ms: dict, key: str, minus: str | None = None) -> str:
        keras, twin = ms[f"keras|{key}"], ms[f"torch|{key}"]
        if minus is not None:  # the part: the step with it minus without it
            keras, twin = ms[f"keras|{minus}"] - keras, ms[f"torch|{minus}"] - twin
        return f"{keras:.1f} / {twin:.1f} ms"

    rows = [
        [
            backend,
            pair(ms, "full"),
            f"{ms['torch|full'] / ms['keras|full']:.2f}x",
            pair(ms, "no-batch-norm", "full"),
            pair(ms, "sgd", "full"),
            pair(ms, "no-decoder", "full"),
            pair(ms, "no-batch-norm"),
        ]
        for backend, ms in data["milliseconds"].items()
    ]
    return markdown_table(
        [
            "backend",
            "Keras / twin step",
            "× torch",
            "batch norms",
            "Adam (vs SGD)",
            "decoder + its loss",
            "step without batch norms",
        ],
        rows,
    )


RENDERERS = {
    "coupling": render_coupling,
    "example-run": render_example_run,
    "example-caveat": render_example_caveat,
    "example-readme": render_example_readme,
    "efficient-run": render_efficient_run,
    "efficient-readme": render_efficient_readme,
    "parity": render_parity,
    "capsule-method-summary": render_capsule_method_summary,
    "efficient-capsnet-breakdown": render_breakdown,
    "benchmarks": render_benchmarks,
    "capsule-method-benchmarks": lambda docs: render_benchmarks(
        docs, "assets/benchmarks/capsule-methods"
    ),
    "multi-mnist": lambda docs: experiment_results.render_multi_mnist(docs, _pending),
    "affine": lambda docs: experiment_results.render_affine(docs, _pending),
    "matrix-capsnet-run": lambda docs: experiment_results.render_matrix_capsnet(
        docs, _pending
    ),
}
