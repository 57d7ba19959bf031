"""The unit a loss is shown in: by fit's progress bar and epoch lines, `History.plot`'s axis and
the command line. The numbers kept (`train`'s return value, `History`, history.json) are always
the loss function's own: nats for "cross_entropy" (the natural log, as torch's), the mean squared
error for "mse"; only what is shown is converted."""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

from .losses import LOSSES

# name -> the factor from the loss function's own value. "bits/char": bits for text models.
FACTORS = {"nats": 1.0, "bits": 1.0 / math.log(2), "bits/char": 1.0 / math.log(2), "mse": 1.0}
OF_LOSS = {name: spec.units for name, spec in LOSSES.items()}  # the loss's own unit first


class Unit(NamedTuple):
    label: str  # shown after the number ("2.1560 bits/char") and on a plot's axis
    factor: float  # shown value = factor x the loss function's value

    def show(self, loss: float) -> str:
        """ "2.1560 bits/char", "0.0123 mse"."""
        return f"{loss * self.factor:.4f}" + (f" {self.label}" if self.label else "")


def unit(name: Optional[str], loss: Optional[str] = None) -> Unit:
    """The Unit called `name` (None: the loss function's own, nats or mse; or, without `loss`,
    no unit at all). ValueError naming `loss_unit` for a name that does not go with `loss`."""
    if name is None:
        return Unit(OF_LOSS[loss][0], 1.0) if loss in OF_LOSS else Unit("", 1.0)
    allowed = OF_LOSS.get(loss, tuple(FACTORS)) if loss is not None else tuple(FACTORS)
    if not isinstance(name, str) or name not in allowed:
        raise ValueError(
            f"loss_unit must be one of {', '.join(map(repr, allowed))} or None"
            + (f" for loss={loss!r}" if loss else "")
            + f", got {name!r}"
        )
    return Unit(name, FACTORS[name])
