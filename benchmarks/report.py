"""Joins timing and memory records into rows, checks the targets, renders table and chart."""

from __future__ import annotations

from pathlib import Path

import common

METHOD = {
    "timing": (
        "One subprocess per Keras backend. In it the Keras contenders and the "
        "hand-written baselines are built once, warmed up (compilation), then "
        "timed in turn, A B C A B C ..., `repeats` times `steps` steps each "
        "(fewer, at least 1, where the last warm-up step shows that `steps` "
        "would take over 8 s); the best repeat is reported (all repeats and "
        "the median are in the JSON). A train step "
        "is forward, backward and an Adam update on one fixed synthetic batch; "
        "Keras steps are `Model.train_on_batch` / `predict_on_batch`. "
        "Ratios compare contenders timed in the same process (for the JAX "
        "baseline: the JAX process)."
    ),
    "memory": (
        "One fresh subprocess per contender, bench and phase, importing only "
        "what that contender needs. RSS is read after imports and model build; "
        "`warmup` steps run (compilation, lazy allocations); the kernel's "
        "peak-RSS mark is reset (/proc/self/clear_refs) and `memory_steps` "
        "more steps run. peak_rss_delta_mb = peak RSS of those steps - RSS "
        "after build, so it counts activations, gradients, optimiser state "
        "and whatever the framework keeps cached from the first steps, not "
        "the compiler's transient peak (kept as first_steps_peak_rss_delta_mb). "
        "peak_rss_per_image_mb divides it by the bench's batch size."
    ),
}


def _key(record: dict) -> tuple:
    return (record["bench"], record["phase"])


def rows(result: dict) -> list[dict]:
    memory = {}
    for record in result["memory"]:
        owner = record["process"] if record["contender"].startswith("keras") else ""
        memory[(owner, record["contender"], *_key(record))] = record
    torch_times = {
        (r["process"], *_key(r)): r["images_per_s"]
        for r in result["timing"]
        if r["contender"] == "torch"
    }
    # The JAX baselines of each JAX process; each Keras contender is compared
    # with the hand-written JAX of the same primary convolution (records
    # before "auto" existed name `s2d` when they used it).
    jax_times = {
        (r["process"], r["contender"], *_key(r)): r["images_per_s"]
        for r in result["timing"]
        if r["contender"] in ("jax", "jax-s2d")
    }

    def peak(owner, contender, key):
        found = memory.get((owner, contender, *key))
        return None if found is None else found["peak_rss_delta_mb"]

    def batch_of(record):
        # Records from before per-bench batch sizes carry none: one batch.
        return record.get("batch") or result["settings"].get("batch")

    out = []
    for record in result["timing"]:
        key = _key(record)
        is_keras = record["contender"].startswith("keras")
        own_peak = peak(record["process"] if is_keras else "", record["contender"], key)
        torch_peak = peak("", "torch", key)
        torch_speed = torch_times.get((record["process"], *key))
        conv = record.get("conv_implementation") or (
            "space_to_depth" if "s2d" in record["contender"] else "direct"
        )
        jax_names = ["jax-s2d" if conv == "space_to_depth" else "jax"]
        if record["bench"] == "routing":
            # No convolution: both hand-written baselines route alike.
            jax_names += ["jax", "jax-s2d"]
        jax_speed = next(
            (
                jax_times[(record["process"], name, *key)]
                for name in jax_names
                if (record["process"], name, *key) in jax_times
            ),
            None,
        )
        batch = batch_of(record)
        out.append(
            {
                "bench": record["bench"],
                "phase": record["phase"],
                "process": record["process"],
                "contender": record["contender"],
                "label": record["label"],
                "batch": batch,
                "images_per_s": record["images_per_s"],
                "step_ms": 1000 * record["best_step_s"],
                "peak_rss_delta_mb": own_peak,
                "peak_rss_per_image_mb": (
                    None if own_peak is None or not batch else own_peak / batch
                ),
                "vs_torch": None
                if torch_speed is None
                else record["images_per_s"] / torch_speed,
                "vs_jax": None
                if jax_speed is None
                else record["images_per_s"] / jax_speed,
                "memory_vs_torch": (
                    None
                    if own_peak is None or not torch_peak
                    else own_peak / torch_peak
                ),
                "jit_compile": record.get("jit_compile"),
            }
        )
    return out


def _paper_exact(row: dict) -> bool:
    # Gradients through every routing iteration, float32: the paper's math.
    return row["contender"].startswith("keras") and not any(
        option in row["contender"] for option in ("stopgrad", "bf16")
    )


def targets(result: dict) -> list[dict]:
    """The issue's targets, each with the measured value and whether it is met."""
    found = []
    table = result.get("rows") or rows(result)

    def best(bench, phase, process, metric):
        candidates = [
            r
            for r in table
            if (r["bench"], r["phase"], r["process"]) == (bench, phase, process)
            and _paper_exact(r)
            and r[metric] is not None
        ]
        return max(candidates, key=lambda r: r[metric], default=None)

    def add(name, row, metric, threshold, at_most=False):
        if row is None:
            return
        value = row[metric]
        met = value <= threshold if at_most else value >= threshold
        found.append(
            {
                "target": name,
                "contender": row["label"],
                "value": round(value, 3),
                "threshold": threshold,
                "met": bool(met),
            }
        )

    processes = sorted({r["process"] for r in table})
    fastest = None
    for process in processes:
        row = best("routing", "train", process, "vs_torch")
        add(f"routing train, {process}: >= 0.9x torch", row, "vs_torch", 0.9)
        if row is not None and (
            fastest is None or row["vs_torch"] > fastest["vs_torch"]
        ):
            fastest = row
    add("routing train, fastest backend: >= 1.2x torch", fastest, "vs_torch", 1.2)
    for process in ("tensorflow", "torch"):
        row = best("capsnet", "train", process, "vs_torch")
        add(f"capsnet train, {process}: >= 0.95x torch", row, "vs_torch", 0.95)
    for process in processes:
        if process.startswith("jax"):
            add(
                f"capsnet train, {process}: >= 0.9x jax",
                best("capsnet", "train", process, "vs_jax"),
                "vs_jax",
                0.9,
            )
    for process in processes:
        default = [
            r
            for r in table
            if (r["bench"], r["phase"], r["process"], r["contender"])
            == ("routing", "train", process, "keras")
            and r["memory_vs_torch"] is not None
        ]
        add(
            f"routing train memory, {process}: <= 1.5x torch",
            default[0] if default else None,
            "memory_vs_torch",
            1.5,
            at_most=True,
        )
    return found


def _fmt(value, digits=0, suffix=""):
    if value is None:
        return "–"
    return f"{value:,.{digits}f}{suffix}"


def batches_text(settings: dict) -> str:
    """`batch 100 (routing, capsnet), 16 (efficient-capsnet)` or `batch 100`."""
    batches = settings.get("batches")
    if not batches:
        return f"batch {settings.get('batch')}"
    benches: dict[int, list[str]] = {}
    for bench, size in batches.items():
        benches.setdefault(size, []).append(bench)
    if len(benches) == 1:
        return f"batch {next(iter(benches))}"
    return "batch " + ", ".join(
        f"{size} ({', '.join(names)})" for size, names in benches.items()
    )


def markdown(result: dict) -> str:
    machine = result["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(result["versions"].items()))
    settings = result["settings"]
    lines = [
        f"Run {result['date']} on {machine.get('cpu_model')} "
        f"({machine.get('logical_cpus')} logical CPUs, {machine.get('memory_gib')} GiB), "
        f"device {settings['device']}; {batches_text(settings)}, best of "
        f"{settings['repeats']} x {settings['steps']} steps, malloc {settings['malloc']}"
        f"{', SMOKE' if settings['smoke'] else ''}.  ",
        f"Versions: {versions}.",
        "",
        "| bench | phase | contender | process | batch | images/s | ms/step "
        "| peak RSS Δ MiB | MiB/image | × torch | × JAX | mem × torch |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['bench']} | {r['phase']} | {r['label']} | {r['process']} "
            f"| {_fmt(r.get('batch'))} "
            f"| {_fmt(r['images_per_s'], 1)} | {_fmt(r['step_ms'], 1)} "
            f"| {_fmt(r['peak_rss_delta_mb'])} "
            f"| {_fmt(r.get('peak_rss_per_image_mb'), 1)} "
            f"| {_fmt(r['vs_torch'], 2, 'x')} "
            f"| {_fmt(r['vs_jax'], 2, 'x')} | {_fmt(r['memory_vs_torch'], 2, 'x')} |"
        )
    if result.get("targets"):
        lines += [
            "",
            "| target | best paper-exact contender | value | met |",
            "|---|---|---:|---|",
        ]
        for t in result["targets"]:
            lines.append(
                f"| {t['target']} | {t['contender']} | {t['value']:.2f} "
                f"| {'yes' if t['met'] else '**no**'} |"
            )
    return "\n".join(lines) + "\n"


COLOURS = {
    "tensorflow": "#ff8f00",
    "torch": "#ee4c2c",
    "jax": "#5e97f6",
    "jax-noynn": "#1c4fa8",
}


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = {bench: index for index, bench in enumerate(common.BENCHES)}
    panels = sorted(
        {(r["bench"], r["phase"]) for r in result["rows"]},
        key=lambda k: (order.get(k[0], len(order)), k[1] != "train"),
    )
    fig, axes = plt.subplots(
        2, len(panels), figsize=(5.2 * len(panels), 9), squeeze=False
    )
    for column, (bench, phase) in enumerate(panels):
        rows_here = [
            r for r in result["rows"] if (r["bench"], r["phase"]) == (bench, phase)
        ]
        labels = [
            f"{r['label']}"
            + (
                ""
                if r["contender"].startswith("keras")
                and r["process"] in ("tensorflow", "torch", "jax")
                else f" @{r['process']}"
            )
            for r in rows_here
        ]
        colours = [COLOURS.get(r["process"], "grey") for r in rows_here]
        hatches = [
            "" if r["contender"].startswith("keras") else "//" for r in rows_here
        ]
        batch = rows_here[0].get("batch")
        for row_index, (metric, title) in enumerate(
            (
                ("images_per_s", "images/s (higher is better)"),
                ("peak_rss_delta_mb", "peak RSS Δ, MiB (lower is better)"),
            )
        ):
            ax = axes[row_index][column]
            values = [r[metric] or 0.0 for r in rows_here]
            bars = ax.barh(range(len(values)), values, color=colours, edgecolor="black")
            for bar, hatch in zip(bars, hatches):
                bar.set_hatch(hatch)
            ax.set_yticks(range(len(values)), labels, fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{bench} {phase}, batch {batch}: {title}", fontsize=9)
            for index, value in enumerate(values):
                digits = 0 if value >= 10 or value == 0 else 2
                ax.text(value, index, f" {value:,.{digits}f}", va="center", fontsize=7)
    machine = result["machine"]
    fig.suptitle(
        "keras-capsules vs hand-written (hatched) CapsNets, "
        f"{batches_text(result['settings'])} - {machine.get('cpu_model')}, "
        f"{machine.get('logical_cpus')} CPUs - {result['date'][:10]}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
