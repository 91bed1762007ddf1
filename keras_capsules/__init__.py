"""Capsule-network building blocks for Keras 3, on TensorFlow, PyTorch and JAX."""

from keras_capsules import layers, losses, ops
from keras_capsules.layers import Length, Mask, PrimaryCapsule, RoutingCapsule
from keras_capsules.losses import MarginLoss
from keras_capsules.version import __version__

__all__ = [
    "Length",
    "Mask",
    "MarginLoss",
    "PrimaryCapsule",
    "RoutingCapsule",
    "__version__",
    "layers",
    "losses",
    "ops",
]
