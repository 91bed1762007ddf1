"""Capsule layers."""

from keras_capsules.layers.base_matrix_capsule import BaseMatrixCapsule
from keras_capsules.layers.base_routing_capsule import BaseRoutingCapsule
from keras_capsules.layers.class_matrix_capsule import ClassMatrixCapsule
from keras_capsules.layers.conv_matrix_capsule import ConvMatrixCapsule
from keras_capsules.layers.depthwise_primary_capsule import DepthwisePrimaryCapsule
from keras_capsules.layers.length import Length
from keras_capsules.layers.mask import Mask
from keras_capsules.layers.primary_capsule import PrimaryCapsule
from keras_capsules.layers.primary_matrix_capsule import PrimaryMatrixCapsule
from keras_capsules.layers.routing_capsule import RoutingCapsule
from keras_capsules.layers.self_attention_routing_capsule import (
    SelfAttentionRoutingCapsule,
)

__all__ = [
    "BaseMatrixCapsule",
    "BaseRoutingCapsule",
    "ClassMatrixCapsule",
    "ConvMatrixCapsule",
    "DepthwisePrimaryCapsule",
    "Length",
    "Mask",
    "PrimaryCapsule",
    "PrimaryMatrixCapsule",
    "RoutingCapsule",
    "SelfAttentionRoutingCapsule",
]
