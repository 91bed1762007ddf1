"""Capsule-network building blocks for Keras 3, on TensorFlow, PyTorch and JAX."""

from keras_capsules import datasets, layers, losses, models, ops, visualization
from keras_capsules.layers import Length, Mask, PrimaryCapsule, RoutingCapsule
from keras_capsules.losses import MarginLoss, ReconstructionLoss
from keras_capsules.models import CapsNet
from keras_capsules.version import __version__

__all__ = [
    "CapsNet",
    "Length",
    "Mask",
    "MarginLoss",
    "PrimaryCapsule",
    "ReconstructionLoss",
    "RoutingCapsule",
    "__version__",
    "datasets",
    "layers",
    "losses",
    "models",
    "ops",
    "visualization",
]
