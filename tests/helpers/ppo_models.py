"""Tiny PPO setups for tests: a random policy, and a reward that is easy to raise."""

import copy

import torch

from instructgpt.models.reward import RewardModel
from instructgpt.models.tiny import tiny_model
from instructgpt.training.ppo import Models
from instructgpt.training.ppo_io import prepare_models


class VowelReward(torch.nn.Module):
    """A fixed reward model: 4 x the fraction of real tokens that are the bytes a, e, i, o, u."""

    def __init__(self, tokenizer):
        super().__init__()
        ids = [tokenizer.convert_tokens_to_ids(c) for c in "aeiou"]
        self.register_buffer("targets", torch.tensor(ids))
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a parameter, so .parameters() has a device

    def forward(self, input_ids, attention_mask):
        hits = torch.isin(input_ids, self.targets) & attention_mask.bool()
        return 4.0 * hits.sum(-1).float() / attention_mask.sum(-1).clamp(min=1)


def tiny_models(tokenizer, seed=0, reward="vowels"):
    policy = tiny_model(tokenizer, seed=seed)
    rm = RewardModel.from_causal_lm(tiny_model(tokenizer, seed=seed + 1))
    reward_model = VowelReward(tokenizer) if reward == "vowels" else rm
    value_model = copy.deepcopy(rm)
    return prepare_models(
        Models(policy, copy.deepcopy(policy), value_model, reward_model, tokenizer), torch.device("cpu")
    )
