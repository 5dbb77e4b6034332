"""Exponential moving average of a model's weights (the weights a released checkpoint carries)."""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """A float32 shadow copy of a model's state, updated after each optimizer step.

    The effective decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after n updates, so the
    average is not dominated by the random initial weights in short runs.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().float().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        ema, live = [], []
        for name, value in model.state_dict().items():
            if value.is_floating_point():
                ema.append(self.shadow[name])
                live.append(value.detach().float())
            else:  # integer buffers (counters, indices) are copied, not averaged
                self.shadow[name].copy_(value)
        torch._foreach_lerp_(ema, live, 1.0 - d)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights under the model's own keys (loadable with ``model.load_state_dict``)."""
        return self.shadow

    def training_state(self) -> dict:
        return {"shadow": self.shadow, "updates": self.updates, "decay": self.decay}

    def load_training_state(self, state: dict) -> None:
        for name, value in state["shadow"].items():
            self.shadow[name].copy_(value)
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])
