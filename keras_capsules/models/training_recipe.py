from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class TrainingRecipe:
    """How a capsule model's paper trains it: what a bare `compile()` uses.

    `model.compile()` with no arguments takes its optimizer (Adam at
    `learning_rate`), its losses and metrics from the model's recipe, and
    `model.fit` then adds the recipe's per-epoch schedules as callbacks.
    The examples read their defaults (`batch_size`, `epochs`) from here.

    The learning rate of epoch `e` (counted from 0) is
    `max(learning_rate * decay_per_epoch ** e, min_learning_rate)`.

    Args:
        learning_rate: Adam's learning rate of the first epoch.
        batch_size: Images per training step.
        epochs: Epochs of the paper's (or its authors' code's) run.
        decay_per_epoch: Factor on the learning rate after every epoch.
            Defaults to `1.0`, no decay.
        min_learning_rate: Floor of the decayed learning rate. Defaults to
            `0.0`.
        reconstruction_weight: Weight of the decoder's sum of squared pixel
            errors, for models with a decoder. Defaults to `0.0`.
        weight_decay: Adam's decoupled weight decay, or `None`. Defaults to
            `None`.
        source: Where the recipe comes from, in words.
    """

    learning_rate: float
    batch_size: int
    epochs: int
    decay_per_epoch: float = 1.0
    min_learning_rate: float = 0.0
    reconstruction_weight: float = 0.0
    weight_decay: float | None = None
    source: str = ""

    def learning_rate_at(self, epoch: int, learning_rate: float | None = None) -> float:
        """The learning rate of epoch `epoch` (from 0).

        The second argument, which Keras's `LearningRateScheduler` passes,
        is the current rate; the schedule does not depend on it, so a
        resumed run continues with the same rates.
        """
        del learning_rate
        decayed = self.learning_rate * self.decay_per_epoch**epoch
        return float(max(decayed, self.min_learning_rate))
