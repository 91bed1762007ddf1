"""The Efficient-CapsNet and matrix-capsule benches against their PyTorch twins.

`benchmarks/benchmark.py --smoke` on the two benches, for the current
`KERAS_BACKEND` (plumbing, not speed), and the twins against the Keras
models: the same weight counts and, with the Keras weights copied in, the
same outputs.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_capsules.models import EfficientCapsNet, MatrixCapsNet

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402
import worker  # noqa: E402

TWIN_BENCHES = {
    "efficient-capsnet": common.EFFICIENT_CAPSNET_PARAMS,
    "matrix-capsnet": common.MATRIX_CAPSNET_PARAMS,
}


def _run(code: str, *args: str) -> str:
    """Runs Python in a fresh process: PyTorch apart from this backend."""
    completed = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=BENCHMARKS,
        env={**os.environ, "PYTHONPATH": f"{BENCHMARKS}{os.pathsep}{REPO_ROOT}"},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


@pytest.fixture(scope="module")
def torch_weights() -> dict:
    """Each twin's weight count, as Keras counts (PyTorch in its own process)."""
    return json.loads(
        _run(
            "import json, torch_efficient_capsnet as e, torch_matrix_capsnet as m\n"
            "import common\n"
            "out = {}\n"
            "for bench, module in (('efficient-capsnet', e), ('matrix-capsnet', m)):\n"
            "    t = module.Trainer(bench, common.synthetic_batch(bench, 1))\n"
            "    out[bench] = t.num_params()\n"
            "print(json.dumps(out))\n"
        )
    )


def test_keras_models_have_the_expected_weight_counts():
    assert EfficientCapsNet().count_params() == common.EFFICIENT_CAPSNET_PARAMS
    assert MatrixCapsNet().count_params() == common.MATRIX_CAPSNET_PARAMS


def test_twins_have_the_keras_models_weight_counts(torch_weights):
    assert torch_weights == {
        "efficient-capsnet": EfficientCapsNet().count_params(),
        "matrix-capsnet": MatrixCapsNet().count_params(),
    }


# Loads the Keras weights into a twin, runs it on the same batch and prints,
# per output, the largest difference from Keras and the largest value.
TWIN_OUTPUTS = """
import json, sys
import numpy as np, torch
import torch_efficient_capsnet, torch_matrix_capsnet
bench, path = sys.argv[1:]
data = np.load(path)
weights = {
    k[len("weight:"):].replace("|", "/"): data[k]
    for k in data.files if k.startswith("weight:")
}
images, labels = torch.as_tensor(data["images"]), torch.as_tensor(data["labels"])
with torch.no_grad():
    if bench == "efficient-capsnet":
        model = torch_efficient_capsnet.EfficientCapsNet()
        torch_efficient_capsnet.load_keras_weights(model, weights)
        lengths, reconstructions = model.eval()(images, labels)
        outputs = {"lengths": lengths, "reconstructions": reconstructions}
    else:
        model = torch_matrix_capsnet.MatrixCapsNet()
        torch_matrix_capsnet.load_keras_weights(model, weights)
        poses, activations = model.class_capsules_of(images)
        outputs = {"poses": poses, "activations": activations}
print(json.dumps({
    name: [
        float(np.abs(value.numpy() - data["output:" + name]).max()),
        float(np.abs(data["output:" + name]).max()),
    ]
    for name, value in outputs.items()
}))
"""


@pytest.mark.parametrize("bench", sorted(TWIN_BENCHES))
def test_twin_computes_the_keras_model(bench, tmp_path):
    keras.utils.set_random_seed(0)
    batch = common.synthetic_batch(bench, 2, seed=1)
    images, labels = batch["inputs"], batch["labels"]
    if bench == "efficient-capsnet":
        model = EfficientCapsNet()
        lengths, reconstructions = model((images, labels), training=False)
        outputs = {"lengths": lengths, "reconstructions": reconstructions}
    else:
        model = MatrixCapsNet(**common.MATRIX_CAPSNET_ROUTING)
        poses, activations = model.class_capsules(images)
        outputs = {"poses": poses, "activations": activations}
    arrays = {
        f"weight:{w.path.replace('/', '|')}": keras.ops.convert_to_numpy(w)
        for w in model.weights
    }
    for name, value in outputs.items():
        arrays[f"output:{name}"] = keras.ops.convert_to_numpy(value)
    path = tmp_path / "keras.npz"
    np.savez(path, images=images, labels=labels, **arrays)
    differences = json.loads(_run(TWIN_OUTPUTS, bench, str(path)))
    assert set(differences) == set(outputs)
    for name, (difference, scale) in differences.items():
        assert scale > 0, name
        assert difference <= 1e-5 + 1e-4 * scale, (bench, name, difference, scale)


def test_contenders_with_different_weight_counts_are_refused():
    class Fake:
        def __init__(self, count):
            self.count = count

        def num_params(self):
            return self.count

    worker.check_same_weights("x", {"keras": Fake(3), "torch": Fake(3)})
    with pytest.raises(RuntimeError, match="differ in weight count"):
        worker.check_same_weights("x", {"keras": Fake(3), "torch": Fake(4)})


def test_only_the_torch_twin_and_plain_keras_variants_run():
    for bench in TWIN_BENCHES:
        assert common.runs("torch", bench, "train")
        assert common.runs("keras", bench, "train")
        for name in ("jax", "jax-s2d", "keras-stopgrad", "keras-s2d", "keras-bf16"):
            assert not common.runs(name, bench, "train"), (name, bench)
    assert common.runs("keras-jit", "efficient-capsnet", "train")


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory) -> dict:
    output = tmp_path_factory.mktemp("benchmark")
    completed = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "benchmark.py"),
            "--smoke",
            "--backends",
            keras.backend.backend(),
            "--benches",
            ",".join(TWIN_BENCHES),
            "--output",
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, (
        completed.stdout[-2000:] + completed.stderr[-4000:]
    )
    assert (output / "results.png").stat().st_size > 0
    table = (output / "results.md").read_text()
    for bench in TWIN_BENCHES:
        assert f"| {bench} | train |" in table
    return json.loads((output / "results.json").read_text())


@pytest.mark.slow
def test_smoke_times_keras_against_the_torch_twin(smoke_result):
    backend = keras.backend.backend()
    rows = smoke_result["rows"]
    for bench, params in TWIN_BENCHES.items():
        here = {r["contender"]: r for r in rows if r["bench"] == bench}
        assert set(here) == {"keras", "torch"}, bench
        for row in here.values():
            assert row["process"] == backend
            assert row["phase"] == "train"
            assert row["batch"] == 2
            for key in ("images_per_s", "step_ms", "vs_torch"):
                assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert here["torch"]["vs_torch"] == 1.0
        timed = [r for r in smoke_result["timing"] if r["bench"] == bench]
        assert {r["params"] for r in timed} == {params}, bench


@pytest.mark.slow
def test_smoke_measures_memory_per_image(smoke_result):
    for bench in TWIN_BENCHES:
        memory = [r for r in smoke_result["memory"] if r["bench"] == bench]
        assert {r["contender"] for r in memory} == {"keras", "torch"}
        for record in memory:
            assert record["batch"] == 2
            assert record["rss_before_steps_mb"] > 0
            assert math.isfinite(record["peak_rss_delta_mb"])
        for row in smoke_result["rows"]:
            if row["bench"] == bench:
                assert row["peak_rss_per_image_mb"] == pytest.approx(
                    row["peak_rss_delta_mb"] / 2
                )
    assert smoke_result["settings"]["batches"] == dict.fromkeys(TWIN_BENCHES, 2)
