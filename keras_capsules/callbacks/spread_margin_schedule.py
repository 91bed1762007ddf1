from __future__ import annotations

import keras

from keras_capsules._validation import check_non_negative_number, check_positive_int
from keras_capsules.losses.spread_loss import SpreadLoss


class SpreadMarginSchedule(keras.callbacks.Callback):
    """Grows the margin of a `SpreadLoss` during training, linearly per epoch.

    Hinton, Sabour & Frosst (2018) start the spread loss with a margin of
    0.2 and increase it linearly to 0.9 during training, which keeps the
    early capsule layers from dying. At the start of epoch `e` (counted
    from 0) this callback sets

    `m_e = initial_margin + (final_margin - initial_margin) * min(1, e / (epochs - 1))`

    so the first epoch trains with `initial_margin` and epoch `epochs - 1`
    and later ones with `final_margin`. (The authors' code, per their
    OpenReview answer, grows it per step as `0.2 + 0.79 sigmoid(min(10,
    step / 50000 - 4))`; a per-epoch linear ramp needs no step count.)

    The margin is the `margin` attribute of every `SpreadLoss` the model
    was compiled with (or of `loss`, if given). When it changes, the
    callback rebuilds the model's train and test functions, so that the
    next steps, jit-compiled or not, compute the loss with the new margin
    on every backend. That retraces once per change, at an epoch boundary.
    The margin of each epoch is logged as `spread_margin`.

    Args:
        initial_margin: Margin of the first epoch. Defaults to `0.2`.
        final_margin: Margin from epoch `epochs - 1` on. Defaults to `0.9`.
        epochs: Epochs over which the margin grows, a positive integer.
            Defaults to `None`: the `epochs` passed to `fit`.
        loss: The `SpreadLoss` to update. Defaults to `None`: every
            `SpreadLoss` in the model's compiled `loss`.

    Example:

    ```python
    model.compile(optimizer="adam", loss=keras_capsules.losses.SpreadLoss())
    model.fit(x, y, epochs=20,
              callbacks=[keras_capsules.callbacks.SpreadMarginSchedule()])
    ```

    Reference:
        - [Hinton, Sabour & Frosst, 2018. Matrix capsules with EM routing](
          https://openreview.net/forum?id=HJWLfGWRb)
    """

    def __init__(
        self,
        initial_margin: float = 0.2,
        final_margin: float = 0.9,
        epochs: int | None = None,
        loss: SpreadLoss | None = None,
    ) -> None:
        super().__init__()
        self.initial_margin = check_non_negative_number(
            "initial_margin", initial_margin
        )
        self.final_margin = check_non_negative_number("final_margin", final_margin)
        self.epochs = None if epochs is None else check_positive_int("epochs", epochs)
        if loss is not None and not isinstance(loss, SpreadLoss):
            raise ValueError(
                "Received an invalid value for `loss`, expected a "
                f"`SpreadLoss` or None. Received: loss={loss!r}"
            )
        self.loss = loss
        self.margin = self.initial_margin

    def margin_at(self, epoch: int) -> float:
        """The margin of epoch `epoch` (counted from 0)."""
        epochs = self.epochs or (self.params or {}).get("epochs") or 1
        progress = min(1.0, epoch / max(epochs - 1, 1))
        return (
            self.initial_margin + (self.final_margin - self.initial_margin) * progress
        )

    def _losses(self) -> list[SpreadLoss]:
        if self.loss is not None:
            return [self.loss]
        compiled = getattr(self.model, "loss", None)
        if isinstance(compiled, dict):
            compiled = list(compiled.values())
        if not isinstance(compiled, (list, tuple)):
            compiled = [compiled]
        losses = [loss for loss in compiled if isinstance(loss, SpreadLoss)]
        if not losses:
            raise ValueError(
                "`SpreadMarginSchedule` found no `SpreadLoss` to update: compile "
                "the model with one or pass it as `loss`. Received: "
                f"model.loss={getattr(self.model, 'loss', None)!r}"
            )
        return losses

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.margin = self.margin_at(epoch)
        changed = False
        for loss in self._losses():
            if loss.margin != self.margin:
                loss.margin = self.margin
                changed = True
        if changed:
            # Compiled steps read Python attributes when traced: retrace.
            self.model.make_train_function(force=True)
            self.model.make_test_function(force=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["spread_margin"] = self.margin
