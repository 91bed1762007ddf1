"""Capsule layers."""

from keras_capsules.layers.base_routing_capsule import BaseRoutingCapsule
from keras_capsules.layers.length import Length
from keras_capsules.layers.mask import Mask
from keras_capsules.layers.primary_capsule import PrimaryCapsule
from keras_capsules.layers.routing_capsule import RoutingCapsule

__all__ = ["BaseRoutingCapsule", "Length", "Mask", "PrimaryCapsule", "RoutingCapsule"]
