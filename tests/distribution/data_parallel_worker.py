"""Trains a small CapsNet on one device, then data-parallel on two, and reports.

Run in its own process: the JAX backend and two virtual CPU devices must be
chosen before JAX is imported. Prints one JSON line.
"""

from __future__ import annotations

import json
import os

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_capsules  # noqa: E402

BATCH_SIZE = 8
seen_shardings: list = []


class ShardingProbe(keras.layers.Layer):
    """Records how the batch that reaches the model is laid out on devices."""

    def call(self, x):
        jax.debug.inspect_array_sharding(x, callback=seen_shardings.append)
        return x


def build_model() -> keras.Model:
    images = keras.Input((12, 12, 1))
    probed = ShardingProbe()(images)
    features = keras.layers.Conv2D(8, 3, activation="relu")(probed)
    primary = keras_capsules.PrimaryCapsule(4, 4, kernel_size=3, strides=2)(features)
    digits = keras_capsules.RoutingCapsule(3, 8)(primary)
    model = keras.Model(images, keras_capsules.Length()(digits))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras_capsules.MarginLoss())
    return model


def train(model, initial_weights, x, y):
    model.set_weights(initial_weights)
    model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4 * BATCH_SIZE, 12, 12, 1)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, size=len(x))]
    keras.utils.set_random_seed(0)
    single_model = build_model()
    initial = single_model.get_weights()
    single = train(single_model, initial, x, y)
    single_shardings = len(seen_shardings)

    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices)
    )
    parallel = train(build_model(), initial, x, y)

    sharding = seen_shardings[single_shardings]
    batch_shape = (BATCH_SIZE, 12, 12, 1)
    per_device = {
        str(device): [[s.start or 0, s.stop or batch_shape[0]] for s in index[:1]]
        for device, index in sharding.devices_indices_map(batch_shape).items()
    }
    print(
        json.dumps(
            {
                "devices": devices,
                "num_devices": len(sharding.device_set),
                "shard_shape": list(sharding.shard_shape(batch_shape)),
                "batch_rows_per_device": per_device,
                "max_weight_difference": max(
                    float(np.abs(a - b).max()) for a, b in zip(single, parallel)
                ),
                "max_weight_update": max(
                    float(np.abs(a - b).max()) for a, b in zip(single, initial)
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
