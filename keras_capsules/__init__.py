"""Capsule-network building blocks for Keras 3, on TensorFlow, PyTorch and JAX.

Every public name is declared once, in the `__all__` of its module; the
names of `layers`, `losses`, `models` and `callbacks` are also here, at the
top level (`keras_capsules.PrimaryCapsule` is
`keras_capsules.layers.PrimaryCapsule`).
"""

from keras_capsules import (
    callbacks,
    datasets,
    layers,
    losses,
    models,
    ops,
    visualization,
)
from keras_capsules.callbacks import *  # noqa: F403
from keras_capsules.layers import *  # noqa: F403
from keras_capsules.losses import *  # noqa: F403
from keras_capsules.models import *  # noqa: F403
from keras_capsules.version import __version__

__all__ = [
    "__version__",
    "callbacks",
    "datasets",
    "layers",
    "losses",
    "models",
    "ops",
    "visualization",
]
__all__ += callbacks.__all__
__all__ += layers.__all__
__all__ += losses.__all__
__all__ += models.__all__
