"""Routing algorithms, one module each."""

from keras_capsules.ops.routing.dynamic import dynamic_routing

__all__ = ["dynamic_routing"]
