"""Renderings of the capsule experiments' `metrics.json` for the docs hooks.

Each `render_*` function takes the docs folder and returns Markdown; when
the run is not in the repository yet, a "Results pending" admonition naming
the command that makes it (`pending`, passed in by the hooks). The pieces
above them serve the hooks' own renderings of the example runs too.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Pending = Callable[[str, str], str]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def readme_command(readme: Path, script: str) -> str | None:
    """The first `python ...` command naming `script` in a run's README.

    With its continuation lines; `None` without a README or a command.
    """
    if not readme.exists():
        return None
    lines = readme.read_text().splitlines()
    for index, line in enumerate(lines):
        if line.strip().startswith("python") and script in line:
            command = [line.strip()]
            while command[-1].endswith("\\") and index + 1 < len(lines):
                index += 1
                command.append("    " + lines[index].strip())
            return "\n".join(command)
    return None


def command_block(command: str) -> str:
    """The command that made a page's run, as a Markdown code block."""
    return "The run on this page:\n\n```bash\n" + command + "\n```\n"


def accuracy_per_epoch(
    accuracies: list[float],
    label: str = "test accuracy after each epoch",
    columns: int = 2,
) -> list[list[str]]:
    """A table row of the accuracy after each epoch; none when none was logged.

    `columns` is the table's width: the cells after the accuracies are empty.
    """
    if not accuracies:
        return []
    cells = ", ".join(f"{i}: {a:.2%}" for i, a in enumerate(accuracies, start=1))
    return [[label, cells, *[""] * (columns - 2)]]


def _run_header(directory: Path, script: str) -> list[str]:
    command = readme_command(directory / "README.md", script)
    return [command_block(command)] if command else []


def _renders_run(
    folder: str, what: str, script: str
) -> Callable[[Callable[[dict], list[str]]], Callable[[Path, Pending], str]]:
    """Makes `body(metrics) -> markdown pieces` a hook `render(docs_dir, pending)`.

    The hook reads `docs/assets/<folder>/metrics.json`, or returns `pending`'s
    admonition naming `what` and `examples/<script>` when the run is not
    committed; before the body it puts the command of the folder's README.
    """

    def decorate(body: Callable[[dict], list[str]]) -> Callable[[Path, Pending], str]:
        def render(docs_dir: Path, pending: Pending) -> str:
            directory = docs_dir / "assets" / folder
            path = directory / "metrics.json"
            if not path.exists():
                return pending(
                    f"{what}, `assets/{folder}/metrics.json`",
                    f"It is made by `examples/{script}`.",
                )
            metrics = json.loads(path.read_text())
            return "\n".join([*_run_header(directory, script), *body(metrics)])

        render.__name__ = render.__qualname__ = body.__name__
        render.__doc__ = body.__doc__
        return render

    return decorate


def _machine(metrics: dict) -> str:
    return (
        f"{metrics['backend']} backend (Keras {metrics['keras_version']}), "
        f"{metrics['machine']}"
    )


@_renders_run("multi_mnist", "the MultiMNIST run", "multi_mnist.py")
def render_multi_mnist(metrics: dict) -> list[str]:
    accuracies = metrics["history"].get("val_lengths_accuracy", [])
    rows = [
        [
            "error (both labels in the top 2)",
            f"**{metrics['test_error']:.2%}** on {metrics['test_pairs']:,} test pairs",
            f"{metrics['paper_test_error']:.1%}",
        ],
        [
            "training pairs seen",
            f"{metrics['train_pairs_seen']:,} ({metrics['epochs']} epoch(s) of "
            f"{metrics['train_pairs_per_epoch']:,} new pairs)",
            f"{metrics['paper_train_pairs']:,}",
        ],
        ["weights", f"{metrics['parameters']:,}", "about 11M"],
        [
            "time",
            f"{sum(metrics['epoch_seconds']) / 60:.0f} min "
            f"({metrics['train_images_per_second']:.0f} training pairs/s)",
            "GPU, not given",
        ],
    ]
    # After one epoch, that epoch's accuracy is the error in the first row.
    if len(accuracies) > 1:
        rows += accuracy_per_epoch(accuracies, "accuracy after each epoch", columns=3)
    return [
        markdown_table(["", "this run", "Sabour et al. 2017"], rows),
        f"Machine: {_machine(metrics)}.\n",
    ]


@_renders_run("affine_robustness", "the affine-robustness run", "affine_robustness.py")
def render_affine(metrics: dict) -> list[str]:
    accuracy, paper = metrics["test_accuracy"], metrics["paper_test_accuracy"]
    budget = {
        "capsnet": f"{metrics['capsnet_epochs']} epoch(s) of "
        f"{metrics['train_digits']:,} digits, {metrics['capsnet_seconds'] / 60:.0f} min",
        "cnn": f"{metrics['cnn_rounds']} round(s) of {metrics['cnn_round_images']:,} "
        f"digits, {metrics['cnn_seconds'] / 60:.0f} min",
    }
    rows = [
        [
            name,
            f"{metrics['parameters'][model]:,}",
            f"{accuracy[model]['expanded']:.2%}",
            f"**{accuracy[model]['affnist']:.2%}**",
            f"{paper[model]['expanded']:.2%} / {paper[model]['affnist']:.0%}",
            budget[model],
        ]
        for model, name in (("capsnet", "CapsNet"), ("cnn", "CNN baseline"))
    ]
    return [
        markdown_table(
            [
                "model",
                "weights",
                "expanded MNIST test",
                "affNIST-like test",
                "paper (expanded / affNIST)",
                "training",
            ],
            rows,
        ),
        f"Test sets: the {metrics['test_digits']:,} MNIST test digits, once "
        "translated in 40x40 (expanded) and once under random affine "
        f"transformations (affNIST-like). Machine: {_machine(metrics)}.\n",
    ]


@_renders_run(
    "matrix_capsnet", "the MNIST run of MatrixCapsNet", "matrix_capsnet_mnist.py"
)
def render_matrix_capsnet(metrics: dict) -> list[str]:
    accuracies = metrics.get("history", {}).get("val_accuracy", [])
    rows = [
        [
            "test accuracy",
            f"**{metrics['test_accuracy']:.2%}** on {metrics['test_samples']:,} "
            "MNIST test images",
        ],
        [
            "training",
            f"{metrics['epochs']} epoch(s) on {metrics['train_samples']:,} images",
        ],
        ["weights", f"{metrics['parameters']:,}"],
        [
            "time per epoch",
            f"{metrics['seconds_per_epoch']:.0f} s "
            f"({metrics['train_images_per_second']:.0f} training images/s)",
        ],
    ]
    rows += accuracy_per_epoch(accuracies)
    return [markdown_table(["", "this run"], rows), f"Machine: {_machine(metrics)}.\n"]
