"""What the multi-process tests train: two tiny capsule models, a few steps.

Shared by the test (which trains the single-process reference in its own
process) and by `multi_process_worker.py` (one process of a distributed
run). Keras is imported inside the functions: a worker chooses its
backend first.

Every run starts from the same weights, read from the file the test
writes, and trains with the models' `compile()` defaults on
`fit(images, integer_labels)`, one epoch of `STEPS` global batches of
`GLOBAL_BATCH` images, in order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("capsnet", "efficient_capsnet")
GLOBAL_BATCH = 8
STEPS = 3
NUM_CLASSES = 3


def small_config(name: str) -> dict[str, Any]:
    """The small configuration of the models' own tests (tests/models)."""
    if name == "capsnet":
        from tests.models.test_capsnet import SMALL
    else:
        from tests.models.test_efficient_capsnet import SMALL
    assert SMALL["num_classes"] == NUM_CLASSES, SMALL
    return dict(SMALL)


def build_model(name: str, engine: str, distributed: bool) -> Any:
    """The model `name`, compiled with its recipe (`compile()` defaults).

    EfficientCapsNet's batch normalization is the one layer whose training
    step depends on the whole batch, not on each image alone. Under JAX's
    `DataParallel` it sees the global batch (one program over the sharded
    array); under `tf.distribute` it is made `synchronized` (its statistics
    all-reduced over the replicas, Keras's TensorFlow-only option) in the
    distributed run; PyTorch has no such option for a Keras layer
    (`torch.nn.SyncBatchNorm` converts only `torch.nn.BatchNorm` modules),
    so each DDP process would normalise its share with its own statistics
    and keep its own moving averages: on torch the normalization layers are
    frozen (`trainable=False`, inference mode) in both runs.
    """
    from keras_capsules.models import CapsNet, EfficientCapsNet

    model_class = CapsNet if name == "capsnet" else EfficientCapsNet
    model = model_class(**small_config(name))
    for layer in getattr(model, "batch_norms", []):
        if engine == "torch":
            layer.trainable = False
        elif engine.startswith("tf") and distributed:
            layer.synchronized = True
    model.compile()
    return model


def train_in_strategy(
    model: Any,
    strategy: Any,
    images: Any,
    labels: Any,
    epochs: int = 1,
    callbacks: Any = None,
) -> None:
    """`fit`'s training step under `strategy`, in a loop of our own.

    Keras 3.15's `fit` cannot run under `MultiWorkerMirroredStrategy`: it
    averages each replica's logs with `strategy.reduce("MEAN", v, axis=0)`,
    which fails on the scalar loss ("Invalid reduction dimension 0 for input
    with 0 dimensions"), and a model created in the scope is first built
    from a batch that it reduces the same way ("Attempt to convert a value
    (PerReplica...) to a Tensor", keras-team/keras#20585). So the step is
    TensorFlow's custom loop for that strategy: the model's `compute_loss`
    in every replica (Keras divides each replica's mean by the replicas)
    and the compiled optimizer, which sums the gradients over them. Like
    `fit`, it calls the `callbacks` (a `keras.callbacks.CallbackList`) at
    the start, and at the end of each epoch from the one they restored.
    """
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    batches = strategy.experimental_distribute_dataset(dataset.batch(GLOBAL_BATCH))
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)

    if id(model) in _strategy_steps:
        step = _strategy_steps[id(model)]
    else:
        step = _strategy_steps[id(model)] = strategy_step(model, strategy)

    if callbacks is not None:
        callbacks.on_train_begin()
    # Where `BackupAndRestore` restored a checkpoint it sets this, as in `fit`.
    for epoch in range(getattr(model, "_initial_epoch", None) or 0, epochs):
        for x, y in batches:
            step(x, y)
        if callbacks is not None:
            callbacks.on_epoch_end(epoch)


# One traced step per model: a second call of `train_in_strategy` reuses it.
_strategy_steps: dict[int, Any] = {}


def strategy_step(model: Any, strategy: Any) -> Any:
    """The `tf.function` of one training step of `model` in every replica."""
    import tensorflow as tf

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            scores = model(x, training=True)
            loss = model.compute_loss(x=x, y=y, y_pred=scores, training=True)
        gradients = tape.gradient(loss, model.trainable_variables)
        model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    @tf.function
    def step(x, y):
        strategy.run(replica_step, args=(x, y))

    return step


def global_data(name: str) -> tuple[np.ndarray, np.ndarray]:
    """`STEPS` global batches: images in [0, 1] and integer labels."""
    shape = small_config(name)["image_shape"]
    rng = np.random.default_rng(len(name))
    images = rng.uniform(size=(STEPS * GLOBAL_BATCH, *shape)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, size=STEPS * GLOBAL_BATCH)
    return images, labels.astype("int64")


def local_rows(rank: int, processes: int) -> np.ndarray:
    """The rows process `rank` trains on: its slice of every global batch.

    Batch `b` is rows `b * GLOBAL_BATCH` to `(b + 1) * GLOBAL_BATCH`; process
    `rank` takes the `rank`-th of `processes` equal parts of each.
    """
    local = GLOBAL_BATCH // processes
    return np.concatenate(
        [np.arange(local) + step * GLOBAL_BATCH + rank * local for step in range(STEPS)]
    )


def initial_weights_path(workdir: Path, name: str) -> Path:
    return Path(workdir) / f"initial_{name}.npz"


def result_path(workdir: Path, name: str, rank: int) -> Path:
    return Path(workdir) / f"{name}_rank{rank}.npz"


def save_arrays(path: Path, arrays: list[np.ndarray], **extra: Any) -> None:
    """Writes `arrays` (in order) and `extra` scalars to an .npz, atomically."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial.npz")
    np.savez(
        partial,
        **{f"w{i:03d}": np.asarray(a) for i, a in enumerate(arrays)},
        **{key: np.asarray(value) for key, value in extra.items()},
    )
    partial.replace(path)


def load_arrays(path: Path) -> tuple[list[np.ndarray], dict[str, Any]]:
    with np.load(path) as data:
        weights = [data[key] for key in sorted(data.files) if key.startswith("w")]
        extra = {key: data[key] for key in data.files if not key.startswith("w")}
    return weights, extra


def weights_of(model: Any) -> list[np.ndarray]:
    import keras

    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def set_weights_of(model: Any, weights: list[np.ndarray]) -> None:
    assert len(weights) == len(model.weights), (len(weights), len(model.weights))
    for variable, value in zip(model.weights, weights):
        variable.assign(value)


def train_reference(
    name: str, engine: str, workdir: Path
) -> tuple[list[np.ndarray], int]:
    """Builds `name`, saves its initial weights, trains it on the whole batch.

    One process, every global batch at once: what a distributed run must
    reproduce. Returns the final weights and the optimizer's step count.
    """
    import keras

    keras.utils.set_random_seed(0)
    model = build_model(name, engine, distributed=False)
    save_arrays(initial_weights_path(workdir, name), weights_of(model))
    images, labels = global_data(name)
    model.fit(images, labels, batch_size=GLOBAL_BATCH, shuffle=False, verbose=0)
    return weights_of(model), int(
        keras.ops.convert_to_numpy(model.optimizer.iterations)
    )


def max_difference(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    assert len(a) == len(b), (len(a), len(b))
    return max(float(np.max(np.abs(x - y), initial=0.0)) for x, y in zip(a, b))
