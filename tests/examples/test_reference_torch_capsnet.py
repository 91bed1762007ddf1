"""The hand-written PyTorch CapsNet computes what `CapsNet` computes."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_capsules.losses import MarginLoss, ReconstructionLoss
from keras_capsules.models import CapsNet

torch = pytest.importorskip("torch")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _reference_module():
    sys.path.insert(0, str(EXAMPLES))
    try:
        spec = importlib.util.spec_from_file_location(
            "reference_torch_capsnet", EXAMPLES / "reference_torch_capsnet.py"
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(EXAMPLES))
    return module


def _copy_weights(keras_model: CapsNet, torch_model) -> None:
    """Keras layouts (HWIO kernels, (in, out) dense) to PyTorch's."""

    def tensor(weight, *axes):
        array = np.asarray(keras.ops.convert_to_numpy(weight))
        return torch.from_numpy(np.ascontiguousarray(array.transpose(*axes)))

    with torch.no_grad():
        for source, target in [
            (keras_model.conv, torch_model.conv),
            (keras_model.primary_capsule, torch_model.primary),
        ]:
            target.weight.copy_(tensor(source.kernel, 3, 2, 0, 1))
            target.bias.copy_(tensor(source.bias, 0))
        torch_model.weight.copy_(tensor(keras_model.class_capsule.kernel, 0, 1, 2, 3))
        dense_layers = [
            layer
            for layer in keras_model.decoder.layers
            if isinstance(layer, keras.layers.Dense)
        ]
        linear_layers = [
            m for m in torch_model.decoder if isinstance(m, torch.nn.Linear)
        ]
        for source, target in zip(dense_layers, linear_layers, strict=True):
            target.weight.copy_(tensor(source.kernel, 1, 0))
            target.bias.copy_(tensor(source.bias, 0))


def test_same_weights_give_the_same_outputs_and_loss():
    reference = _reference_module()
    keras_model = CapsNet(input_shape=(28, 28, 1))
    # Longer capsules than at initialisation, so that routing and masking
    # matter in the comparison.
    kernel = keras_model.class_capsule.kernel
    kernel.assign(
        np.random.default_rng(0).normal(0, 0.2, kernel.shape).astype("float32")
    )
    torch_model = reference.TorchCapsNet((28, 28, 1), 10, 3)
    _copy_weights(keras_model, torch_model)
    rng = np.random.default_rng(1)
    images = rng.uniform(size=(3, 28, 28, 1)).astype("float32")
    labels = np.eye(10, dtype="float32")[[4, 0, 9]]

    with torch.no_grad():
        for keras_labels, torch_labels in [
            (None, None),
            (labels, torch.from_numpy(labels)),
        ]:
            # Without labels the reconstruction is of the longest capsule.
            capsules = keras_model.encode(images, training=True)
            expected = (
                keras_model.class_scores(capsules),
                keras_model.decode(capsules, keras_labels),
            )
            actual = torch_model(torch.from_numpy(images), torch_labels)
            for e, a in zip(expected, actual, strict=True):
                np.testing.assert_allclose(
                    a.numpy(), keras.ops.convert_to_numpy(e), atol=2e-5
                )
        lengths, reconstructions = keras_model((images, labels), training=True)
        expected_loss = float(MarginLoss()(labels, lengths)) + float(
            ReconstructionLoss()(images, reconstructions)
        )
        torch_lengths, torch_reconstructions = torch_model(
            torch.from_numpy(images), torch.from_numpy(labels)
        )
        actual_loss = reference.capsnet_loss(
            torch_lengths,
            torch_reconstructions,
            torch.from_numpy(images),
            torch.from_numpy(labels),
            0.0005,
        )
    np.testing.assert_allclose(float(actual_loss), expected_loss, rtol=1e-5)


def test_keras_adam_takes_the_steps_of_keras_optimizers_adam():
    reference = _reference_module()
    rng = np.random.default_rng(0)
    start = rng.uniform(-0.01, 0.01, size=(3, 4)).astype("float32")
    # Gradients below epsilon, as CapsNet's are, where the two forms differ.
    grads = [rng.normal(scale=1e-8, size=(3, 4)).astype("float32") for _ in range(3)]
    grads.append(rng.normal(size=(3, 4)).astype("float32"))

    variable = keras.Variable(start)
    keras_adam = keras.optimizers.Adam(learning_rate=1e-3)
    parameter = torch.nn.Parameter(torch.from_numpy(start.copy()))
    torch_adam = reference.KerasAdam([parameter], lr=1e-3)
    for grad in grads:
        keras_adam.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
        parameter.grad = torch.from_numpy(grad)
        torch_adam.step()
        # The displacements, not the values: steps are far smaller than the
        # weights.
        np.testing.assert_allclose(
            parameter.detach().numpy() - start,
            keras.ops.convert_to_numpy(variable) - start,
            rtol=1e-3,
            atol=1e-9,
        )
