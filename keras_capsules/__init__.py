"""Capsule-network building blocks for Keras 3, on TensorFlow, PyTorch and JAX."""

from keras_capsules import (
    callbacks,
    datasets,
    layers,
    losses,
    models,
    ops,
    visualization,
)
from keras_capsules.layers import (
    ConvInvertedAttentionCapsule,
    DepthwisePrimaryCapsule,
    InvertedAttentionCapsule,
    LayerNormPrimaryCapsule,
    Length,
    Mask,
    PrimaryCapsule,
    RoutingCapsule,
    SelfAttentionRoutingCapsule,
)
from keras_capsules.losses import MarginLoss, ReconstructionLoss
from keras_capsules.models import CapsNet, EfficientCapsNet
from keras_capsules.version import __version__

__all__ = [
    "CapsNet",
    "ConvInvertedAttentionCapsule",
    "DepthwisePrimaryCapsule",
    "EfficientCapsNet",
    "InvertedAttentionCapsule",
    "LayerNormPrimaryCapsule",
    "Length",
    "Mask",
    "MarginLoss",
    "PrimaryCapsule",
    "ReconstructionLoss",
    "RoutingCapsule",
    "SelfAttentionRoutingCapsule",
    "__version__",
    "callbacks",
    "datasets",
    "layers",
    "losses",
    "models",
    "ops",
    "visualization",
]
