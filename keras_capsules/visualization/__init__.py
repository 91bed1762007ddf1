"""Plots of a trained CapsNet: reconstructions, perturbed capsules, history.

Needs matplotlib, which is imported only when a plot is made:
`pip install keras-capsules[examples]`.
"""

from keras_capsules.visualization.capsules import class_capsules, perturb_capsule
from keras_capsules.visualization.plots import (
    plot_history,
    plot_perturbations,
    plot_reconstructions,
)

__all__ = [
    "class_capsules",
    "perturb_capsule",
    "plot_history",
    "plot_perturbations",
    "plot_reconstructions",
]
