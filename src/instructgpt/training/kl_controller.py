"""The KL coefficient beta of the per-token reward, fixed or adaptive (Ziegler et al. 2019).

method.md step 3 uses a fixed beta = 0.02. The adaptive controller of Ziegler et al. (2019),
"Fine-Tuning Language Models from Human Preferences", section 2.2, steers the measured KL
towards a target:

    e_t = clip(KL_t / target - 1, -0.2, 0.2)
    beta_{t+1} = beta_t * (1 + K_beta * e_t),   K_beta = episodes_t / horizon

The trainer calls :meth:`update` once per iteration, explicitly, after the policy update; both
controllers have a ``state_dict`` so a resumed run continues with the same beta.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FixedKLController:
    """beta stays at ``value``."""

    value: float

    def update(self, kl: float, episodes: int) -> None:
        """Nothing to do: beta is fixed."""

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """beta moves proportionally to the relative error of the measured KL (Ziegler et al. 2019)."""

    value: float
    target: float
    horizon: int

    def update(self, kl: float, episodes: int) -> None:
        """``kl``: mean KL(pi || pi_SFT) per episode of the last batch; ``episodes``: its size."""
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * episodes / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


def make_kl_controller(kl_coef: float, target: float | None, horizon: int) -> FixedKLController | AdaptiveKLController:
    """Fixed when ``target`` is None, else adaptive from ``kl_coef``."""
    if target is None:
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, target, horizon)
