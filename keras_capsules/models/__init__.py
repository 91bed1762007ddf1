"""Capsule network models."""

from keras_capsules.models.capsnet import CapsNet

__all__ = ["CapsNet"]
