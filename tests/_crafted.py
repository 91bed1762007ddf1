"""Crafted model files that would run code when loaded, for loading tests.

A `keras.layers.Lambda` layer stores its function as Python bytecode, which
Keras runs only when told to (`safe_mode=False`): every loading path of the
package must refuse these files. The function here touches a marker file
when it runs, so a test can tell "refused" from "loaded and ran the code",
and the same file, loaded with `safe_mode=False`, shows that it does run
code (a refusal test that could not fail proves nothing).

For presets: `lambda_model_config(marker)` is the serialised model (what
`keras.saving.serialize_keras_object` gives, the content of a preset's
`config.json`), and `write_lambda_keras_file(path, marker)` a whole
`.keras` file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

import keras_capsules


def marker_lambda(marker: Path) -> keras.layers.Lambda:
    """A `Lambda` layer that creates `marker` whenever its function runs."""
    # Built from source so that the path is a constant of the bytecode
    # Keras saves: the function needs nothing from this module to run.
    function = eval(f"lambda x: (open({str(marker)!r}, 'a').close(), x)[1]")
    return keras.layers.Lambda(function, name="runs_code")


def lambda_model(marker: Path, inner: Any = None) -> keras.Model:
    """A functional model: package capsule layers (or `inner`), then the Lambda.

    `inner` is a layer or model of the package taking `(8, 8, 1)` images;
    by default a small capsule stack (`PrimaryCapsule`, `RoutingCapsule`,
    `Length`).
    """
    images = keras.Input((8, 8, 1))
    if inner is None:
        capsules = keras_capsules.layers.PrimaryCapsule(2, 4, 3, strides=2)(images)
        capsules = keras_capsules.layers.RoutingCapsule(2, 4)(capsules)
        outputs = keras_capsules.layers.Length()(capsules)
    else:
        outputs = inner(images)
    model = keras.Model(images, marker_lambda(marker)(outputs))
    # Building the model ran the function: the marker is left to the loader.
    Path(marker).unlink(missing_ok=True)
    return model


def lambda_model_config(marker: Path, inner: Any = None) -> dict[str, Any]:
    """The serialised `lambda_model(marker, inner)`, as in a `config.json`."""
    return keras.saving.serialize_keras_object(lambda_model(marker, inner))


def write_lambda_keras_file(path: Path, marker: Path, inner: Any = None) -> Path:
    """Writes `lambda_model(marker, inner)` to the `.keras` file `path`.

    `marker` does not exist afterwards: it appears only if loading the
    file runs the function.
    """
    path, marker = Path(path), Path(marker)
    lambda_model(marker, inner).save(path)
    marker.unlink(missing_ok=True)
    return path
