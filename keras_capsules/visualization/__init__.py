"""Plots of a trained capsule model: reconstructions, perturbed capsules, history.

The figures take any `CapsuleAutoencoder` (an object with `encode` and
`decode`, like `keras_capsules.models.CapsNet`) or plain arrays.

Needs matplotlib, which is imported only when a plot is made:
`pip install "keras-capsules[visualization]"`.
"""

from keras_capsules.visualization.capsules import (
    CapsuleAutoencoder,
    class_capsules,
    perturb_capsule,
)
from keras_capsules.visualization.plots import (
    plot_history,
    plot_perturbations,
    plot_reconstructions,
)

__all__ = [
    "CapsuleAutoencoder",
    "class_capsules",
    "perturb_capsule",
    "plot_history",
    "plot_perturbations",
    "plot_reconstructions",
]
