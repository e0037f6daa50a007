"""An exponential moving average of the policy's trainable weights (method.md: decay 0.992).

The paper keeps an EMA of the PPO policy and uses it as the final model. The average is kept in
fp32 beside the trained parameters (with LoRA only the adapter weights are trained, so only they
are averaged): ``ema = decay * ema + (1 - decay) * param`` after every optimizer step. Whether
the paper corrects the average's bias towards its initial value is not said; none is applied
here (the EMA starts at the SFT weights, which it is meant to stay close to).
"""

from __future__ import annotations

import torch


class PolicyEMA:
    """EMA copies of ``model``'s parameters that require grad, keyed by parameter name."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for name, param in model.named_parameters():
            if name in self.shadow:
                self.shadow[name].lerp_(param.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        """Write the averaged weights into ``model`` (its own weights are overwritten)."""
        for name, param in model.named_parameters():
            if name in self.shadow:
                param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = {n: t.clone() for n, t in state["shadow"].items()}
