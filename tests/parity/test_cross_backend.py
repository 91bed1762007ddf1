"""Cross-backend parity of a saved CapsNet: the 3 x 3 save/load matrix.

The suite runs once per backend (`KERAS_BACKEND`). In the run under backend
X, this module saves the CapsNet under X, then loads that file under all
three backends: under X in this process, under the other two in one fresh
subprocess each (started together). Each loader predicts on the fixed batch
and takes one SGD step. So across the three runs of the suite every
(saver, loader) pair of the 3 x 3 matrix is exercised exactly once, with two
subprocesses per run, and within each run:

- every loader's predictions are compared with the saver's (saver -> loader);
- every pair of loaders is compared on predictions, loss and the weight
  update of the SGD step (loader A vs loader B, on the same file).

The measured differences are written to `parity.json` in the test's tmp
dir; with `PARITY_RECORD=1` they are also merged into
`docs/assets/parity/parity.json` (one entry per saving backend), and with
`PARITY_RECORD=<path>.json` into that file.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pytest

from tests.parity import _capsnet
from tests.parity._capsnet import BACKENDS, OUTPUTS

# Two subprocesses per run, each importing a framework.
pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
RECORD_PATH = REPO_ROOT / "docs" / "assets" / "parity" / "parity.json"
PREDICTION_ATOL = 1e-4
UPDATE_RTOL = 1e-3
LOSS_ATOL = 1e-4
SUBPROCESS_TIMEOUT_S = 400
SAVER = keras.backend.backend()
LOADER_PAIRS = list(itertools.combinations(BACKENDS, 2))


@dataclass
class LoadResult:
    predictions: dict[str, np.ndarray]
    updates: dict[str, np.ndarray]
    info: dict
    seconds: float


@dataclass
class ParityRun:
    saver: str
    saved: dict[str, np.ndarray]
    results: dict[str, LoadResult] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    report: dict = field(default_factory=dict)

    def result(self, loader: str) -> LoadResult:
        if loader in self.errors:
            pytest.fail(
                f"saved by {self.saver} -> loaded by {loader}: the loader "
                f"failed:\n{self.errors[loader]}",
                pytrace=False,
            )
        return self.results[loader]


def _read_result(path: Path, seconds: float) -> LoadResult:
    with np.load(path) as data:
        predictions = {name: data[name] for name in OUTPUTS}
        updates = {
            key.removeprefix("update:"): data[key]
            for key in data.files
            if key.startswith("update:")
        }
        info = json.loads(str(data["info"]))
    return LoadResult(predictions, updates, info, seconds)


def _max_abs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> tuple[float, str]:
    diffs = {
        name: float(np.max(np.abs(a[name].astype("float64") - b[name]))) for name in a
    }
    worst = max(diffs, key=diffs.get)
    return diffs[worst], worst


def _update_difference(a: LoadResult, b: LoadResult) -> dict:
    if set(a.updates) != set(b.updates):
        return {
            "error": f"different weights: {sorted(a.updates)} vs {sorted(b.updates)}"
        }
    largest = max(
        float(np.max(np.abs(u))) for u in [*a.updates.values(), *b.updates.values()]
    )
    diff, variable = _max_abs(a.updates, b.updates)
    return {
        "update_max_abs": diff,
        "update_max_rel": diff / largest if largest > 0 else float("inf"),
        "largest_update": largest,
        "worst_variable": variable,
    }


def _make_report(run: ParityRun) -> dict:
    loaded_by = {}
    for loader, result in run.results.items():
        diff, output = _max_abs(result.predictions, run.saved)
        loaded_by[loader] = {
            "prediction_max_abs_vs_saver": diff,
            "worst_output": output,
            "loss": result.info["loss"],
            "framework_version": result.info["framework_version"],
            "seconds": round(result.seconds, 1),
        }
    loader_pairs = {}
    for a, b in LOADER_PAIRS:
        if a in run.results and b in run.results:
            ra, rb = run.results[a], run.results[b]
            prediction, output = _max_abs(ra.predictions, rb.predictions)
            loss = max(
                abs(ra.info["loss"][k] - rb.info["loss"][k]) for k in ra.info["loss"]
            )
            loader_pairs[f"{a} vs {b}"] = {
                "prediction_max_abs": prediction,
                "worst_output": output,
                "loss_max_abs": loss,
                **_update_difference(ra, rb),
            }
    return {
        "keras_version": keras.__version__,
        "loaded_by": loaded_by,
        "loader_pairs": loader_pairs,
        "errors": sorted(run.errors),
    }


def _summary(saved_by: dict) -> dict:
    """The matrix at a glance: each (saver, loader) cell, each loader pair."""
    cells = {
        f"{saver} -> {loader}": entry["prediction_max_abs_vs_saver"]
        for saver, report in saved_by.items()
        for loader, entry in report["loaded_by"].items()
    }
    pairs: dict[str, dict[str, float]] = {}
    for report in saved_by.values():
        for pair, entry in report["loader_pairs"].items():
            worst = pairs.setdefault(pair, {})
            for key in ("prediction_max_abs", "update_max_rel", "loss_max_abs"):
                worst[key] = max(worst.get(key, 0.0), entry.get(key, float("inf")))
    return {
        "prediction_max_abs_saver_to_loader": dict(sorted(cells.items())),
        "loader_pairs_worst_over_saved_files": dict(sorted(pairs.items())),
    }


def _write_report(run: ParityRun, directory: Path) -> None:
    (directory / "parity.json").write_text(json.dumps(run.report, indent=2))
    target = os.environ.get("PARITY_RECORD", "")
    if target in ("", "0"):
        return
    path = RECORD_PATH if target == "1" else Path(target)
    record = {}
    if path.exists():
        record = json.loads(path.read_text())
    record["description"] = (
        "Largest differences between the TensorFlow, PyTorch and JAX backends "
        "on a small CapsNet saved as .keras under one backend and loaded under "
        "each: predictions (absolute) and the weight update of one SGD step "
        "(relative to the largest update). Written by tests/parity with "
        "PARITY_RECORD=1, one entry per saving backend."
    )
    record["tolerances"] = {
        "prediction_max_abs": PREDICTION_ATOL,
        "update_max_rel": UPDATE_RTOL,
        "loss_max_abs": LOSS_ATOL,
    }
    report = json.loads(json.dumps(run.report))
    for entry in report["loaded_by"].values():
        entry.pop("seconds")  # machine-dependent; kept in the tmp report only
    record.setdefault("saved_by", {})[run.saver] = report
    record["saved_by"] = dict(sorted(record["saved_by"].items()))
    record["summary"] = _summary(record["saved_by"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")


@pytest.fixture(scope="module")
def parity(tmp_path_factory: pytest.TempPathFactory) -> ParityRun:
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    directory = tmp_path_factory.mktemp(f"parity_{SAVER}")
    model_path, batch_path = _capsnet.save(directory)
    with np.load(batch_path) as data:
        saved = {name: data[name] for name in OUTPUTS}
    run = ParityRun(SAVER, saved)

    def out_path(loader: str) -> Path:
        return directory / f"saved_by_{SAVER}__loaded_by_{loader}.npz"

    # The other two backends load in fresh processes, started together so
    # that their framework imports overlap with each other and with the
    # in-process load below.
    children = {}
    for loader in BACKENDS:
        if loader == SAVER:
            continue
        log = open(directory / f"{loader}.log", "w")  # noqa: SIM115
        env = {**os.environ, "KERAS_BACKEND": loader, "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [sys.executable, "-m", "tests.parity._capsnet", "load"]
        command += [str(model_path), str(batch_path), str(out_path(loader))]
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        children[loader] = (process, log, time.monotonic())

    start = time.monotonic()
    try:
        _capsnet.load_predict_step(model_path, batch_path, out_path(SAVER))
        run.results[SAVER] = _read_result(out_path(SAVER), time.monotonic() - start)
    except Exception:
        run.errors[SAVER] = traceback.format_exc()

    for loader, (process, log, started) in children.items():
        status = None
        try:
            process.wait(timeout=SUBPROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            status = f"killed after {SUBPROCESS_TIMEOUT_S} s"
        log.close()
        output = (directory / f"{loader}.log").read_text()
        if process.returncode == 0:
            run.results[loader] = _read_result(
                out_path(loader), time.monotonic() - started
            )
        else:
            status = status or f"exit status {process.returncode}"
            run.errors[loader] = f"{status}; last output:\n{output[-4000:]}"

    run.report = _make_report(run)
    _write_report(run, directory)
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    return run


@pytest.mark.parametrize("loader", BACKENDS)
def test_predictions_match_the_saver(parity: ParityRun, loader: str) -> None:
    result = parity.result(loader)
    for name in OUTPUTS:
        diff = float(np.max(np.abs(result.predictions[name] - parity.saved[name])))
        assert diff <= PREDICTION_ATOL, (
            f"saved by {parity.saver} -> loaded by {loader}: `{name}` differs "
            f"from the saver's prediction by up to {diff:.3g} "
            f"(tolerance {PREDICTION_ATOL:g})"
        )


@pytest.mark.parametrize("loader", BACKENDS)
def test_compile_config_round_trips(parity: ParityRun, loader: str) -> None:
    restored = parity.result(loader).info["restored_compile"]
    where = f"saved by {parity.saver} -> loaded by {loader}"
    assert restored["optimizer"] == "SGD", where
    assert restored["learning_rate"] == pytest.approx(_capsnet.LEARNING_RATE), where
    margin = restored["losses"]["lengths"]
    assert margin["class_name"] == "MarginLoss", where
    assert (margin["m_plus"], margin["m_minus"], margin["down_weight"]) == (
        0.9,
        0.1,
        0.5,
    ), where


@pytest.mark.parametrize(
    "a, b", LOADER_PAIRS, ids=[f"{a}-vs-{b}" for a, b in LOADER_PAIRS]
)
def test_loaders_agree(parity: ParityRun, a: str, b: str) -> None:
    ra, rb = parity.result(a), parity.result(b)
    where = f"file saved by {parity.saver}, loaded by {a} vs by {b}"
    pair = parity.report["loader_pairs"][f"{a} vs {b}"]
    assert "error" not in pair, f"{where}: {pair.get('error')}"
    assert pair["prediction_max_abs"] <= PREDICTION_ATOL, (
        f"{where}: predictions (`{pair['worst_output']}`) differ by up to "
        f"{pair['prediction_max_abs']:.3g} (tolerance {PREDICTION_ATOL:g})"
    )
    assert pair["loss_max_abs"] <= LOSS_ATOL, (
        f"{where}: training losses differ by up to {pair['loss_max_abs']:.3g}: "
        f"{ra.info['loss']} vs {rb.info['loss']}"
    )
    assert pair["update_max_rel"] <= UPDATE_RTOL, (
        f"{where}: the SGD updates of `{pair['worst_variable']}` differ by up to "
        f"{pair['update_max_abs']:.3g}, {pair['update_max_rel']:.3g} of the "
        f"largest update {pair['largest_update']:.3g} (tolerance {UPDATE_RTOL:g})"
    )


def test_the_step_moves_every_weight(parity: ParityRun) -> None:
    # A zero update would make the comparison above vacuous.
    result = parity.result(parity.saver)
    frozen = [path for path, u in result.updates.items() if not np.any(u)]
    assert not frozen, f"saved by {parity.saver}: the SGD step left {frozen} unchanged"
