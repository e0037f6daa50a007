"""Step 3's rollout: sample prompts, generate responses, score them; no optimisation here.

- :mod:`.batch`: :class:`RolloutBatch`, the typed result (every field required, shapes documented);
- :mod:`.prompts`: the PPO prompt set, rendered as in SFT, and the seeded prompt order;
- :mod:`.generation`: the generation interface and its backends (Hugging Face, vLLM);
- :mod:`.forward`: the no-grad forwards (policy, reference, value, reward) shared by rollout and training;
- :mod:`.collect`: :func:`collect_rollout`, prompts to a scored :class:`RolloutBatch`.
"""
