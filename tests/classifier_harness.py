"""The classifier contract every capsule model keeps, as one harness.

Beside `model_harness.run_model_test` (config, saving, dtype policies),
this checks the model is used like any Keras classifier, on the current
backend: `fit(images, labels)` with integer labels after a bare
`compile()` and after `compile(metrics=["accuracy"])`, `evaluate`,
`predict` of shape `(batch, num_classes)`, `.keras` save and load, `fit`
again on the loaded model, `return_coupling=True` from the model's own call
(the same as from `encode`), and presets written and read back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np


def _numpy(x: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def run_classifier_test(
    model_cls: type,
    init_kwargs: dict[str, Any],
    images: np.ndarray,
    labels: np.ndarray,
    tmp_path: Path,
) -> None:
    """Checks the classifier contract; raises AssertionError on a breach.

    Args:
        model_cls: The model class, a `CapsuleClassifier`.
        init_kwargs: Constructor arguments of a small configuration.
        images: A batch of images of the model's `image_shape`.
        labels: Integer class labels `(batch,)`.
        tmp_path: A folder for the saved files.
    """
    batch = len(images)
    num_classes = init_kwargs["num_classes"]
    keras.utils.set_random_seed(1)
    model = model_cls(**init_kwargs)

    model.compile()
    history = model.fit(images, labels, batch_size=batch, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])), history.history
    assert set(history.history) >= {"loss", "accuracy", "learning_rate"}, history
    rates = history.history["learning_rate"]
    expected = [model.recipe.learning_rate_at(e) for e in range(2)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, err_msg="recipe schedule")

    logs = model.evaluate(images, labels, batch_size=batch, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}, logs
    assert 0.0 <= logs["accuracy"] <= 1.0 and np.isfinite(logs["loss"]), logs

    scores = model.predict(images, batch_size=batch, verbose=0)
    assert scores.shape == (batch, num_classes), scores.shape
    assert np.all(np.isfinite(scores))
    accuracy = np.mean(np.argmax(scores, -1) == labels)
    np.testing.assert_allclose(logs["accuracy"], accuracy, atol=1e-6)

    # The coupling comes from the call itself, the same as from `encode`.
    called_scores, coupling = model(images, return_coupling=True)
    np.testing.assert_allclose(_numpy(called_scores), scores, rtol=1e-4, atol=1e-5)
    _, encoded_coupling = model.encode(images, return_coupling=True)
    np.testing.assert_allclose(_numpy(coupling), _numpy(encoded_coupling), atol=1e-6)

    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is model_cls
    np.testing.assert_allclose(
        loaded.predict(images, batch_size=batch, verbose=0), scores, rtol=1e-4,
        atol=1e-5,
    )  # fmt: skip
    before = [_numpy(w) for w in loaded.trainable_weights]
    history = loaded.fit(images, labels, batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [_numpy(w) for w in loaded.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))

    # Compiled by hand, the Keras quick-start way, with one-hot labels.
    fresh = model_cls(**init_kwargs)
    fresh.compile(optimizer="adam", metrics=["accuracy"])
    one_hot = np.eye(num_classes, dtype="float32")[labels]
    history = fresh.fit(images, one_hot, batch_size=batch, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # A user's optimizer gets no recipe schedule.
    assert "learning_rate" not in history.history, history.history

    preset = tmp_path / "preset"
    model.save_to_preset(preset, metadata={"note": "a test preset"})
    revived = model_cls.from_preset(str(preset))
    np.testing.assert_allclose(
        revived.predict(images, batch_size=batch, verbose=0), scores, rtol=1e-4,
        atol=1e-5,
    )  # fmt: skip
