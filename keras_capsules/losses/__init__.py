"""Capsule losses."""

from keras_capsules.losses.margin_loss import MarginLoss

__all__ = ["MarginLoss"]
