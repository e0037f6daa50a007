"""The reward model reads the right token under both paddings and round-trips through a folder."""

import torch

from instructgpt.data.collate import collate
from instructgpt.data.render import Example
from instructgpt.models.reward import RewardModel, last_token_index, load_reward_model, score_texts
from instructgpt.models.tiny import save_tiny, tiny_model


def _rm(tokenizer):
    return RewardModel.from_causal_lm(tiny_model(tokenizer), seed=3).eval()


def test_last_token_index_both_paddings():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4]


def test_score_same_under_left_and_right_padding_and_alone(tokenizer):
    rm = _rm(tokenizer)
    seqs = [Example([1, 40, 41, 42, 43, 2], [True] * 6), Example([1, 50, 2], [True] * 3)]
    with torch.no_grad():
        alone = [rm(torch.tensor([e.input_ids]), torch.ones(1, len(e), dtype=torch.long)).item() for e in seqs]
        for side in ("left", "right"):
            batch = collate(seqs, tokenizer.pad_token_id, padding_side=side)
            scores = rm(batch["input_ids"], batch["attention_mask"])
            torch.testing.assert_close(scores, torch.tensor(alone), rtol=1e-5, atol=1e-5)


def test_score_reads_the_last_token_not_a_pad(tokenizer):
    rm = _rm(tokenizer)
    ids = torch.tensor([[1, 40, 41, 2]])
    with torch.no_grad():
        full = rm.values(ids, torch.ones_like(ids))
        score = rm(ids, torch.ones_like(ids))
    assert torch.allclose(score, full[:, -1])
    assert not torch.allclose(full[:, -1], full[:, -2])


def test_values_equal_scores_of_prefixes(tokenizer):
    rm = _rm(tokenizer)
    ids = torch.tensor([[1, 40, 41, 42, 2]])
    with torch.no_grad():
        values = rm.values(ids, torch.ones_like(ids))[0]
        prefix = [rm(ids[:, : t + 1], torch.ones(1, t + 1, dtype=torch.long)).item() for t in range(5)]
    torch.testing.assert_close(values, torch.tensor(prefix), rtol=1e-5, atol=1e-5)


def test_save_load_round_trip_keeps_head_and_bias(tmp_path, tokenizer):
    rm = _rm(tokenizer)
    rm.normalization_bias.fill_(-0.75)
    rm.save_pretrained(tmp_path / "rm", tokenizer, parent="sft")
    loaded, tok = load_reward_model(tmp_path / "rm")
    prompts, responses = ["Say hi.", "Count to three."], ["hi", "one two three"]
    torch.testing.assert_close(
        torch.tensor(score_texts(loaded, tok, prompts, responses)),
        torch.tensor(score_texts(rm, tokenizer, prompts, responses)),
    )
    assert float(loaded.normalization_bias) == -0.75


def test_fresh_head_from_a_causal_lm_folder(tmp_path):
    folder = save_tiny(str(tmp_path / "lm"))
    rm, tok = load_reward_model(folder, seed=1, new_head=True)
    assert float(rm.normalization_bias) == 0.0
    scores = score_texts(rm, tok, ["a", "b", "c"], ["x", "yy", "zzz"], batch_size=2)
    assert len(scores) == 3 and len(set(scores)) == 3
