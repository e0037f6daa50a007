"""Reward and value models in Hugging Face's layout: scores agree both ways (issue 21, point 1).

Ours -> Hugging Face: ``AutoModelForSequenceClassification`` loads our folder with our head and
scores every response exactly as we do, also when the tokenizer pads with EOS; the saved
normalisation bias (which its bias-free head cannot hold) is added only where PPO asks for it.
Hugging Face -> ours: a TRL-style or OpenRLHF-style reward model loads with its trained head and
the same scores. A model without a head is an error; folders of the older layout still load.
"""

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from instructgpt.data.collate import collate
from instructgpt.data.render import Example, render_prompt, response_ids
from instructgpt.models.loader import ModelLoadError
from instructgpt.models.reward import (
    HEAD_FILE,
    REWARD_JSON,
    RewardModel,
    load_reward_model,
    load_reward_weights,
    score_texts,
)
from instructgpt.models.tiny import save_tiny, tiny_model, tiny_tokenizer
from instructgpt.training.rm_data import score_sequences

PROMPTS = ["Say hi.", "Count to three.", "Name a colour."]
RESPONSES = ["hi", "one two three", "a rather longer answer: blue"]


def _trained_like_rm(tokenizer, bias: float = 0.0) -> RewardModel:
    """A reward model whose head is far from any fresh init (norm about 8), as after training."""
    rm = RewardModel.from_causal_lm(tiny_model(tokenizer), seed=3).eval()
    with torch.no_grad():
        rm.head.weight.normal_(0.0, 1.5, generator=torch.Generator().manual_seed(7))
    rm.normalization_bias.fill_(bias)
    return rm


def _right_padded(tokenizer) -> dict[str, torch.Tensor]:
    """The test pairs rendered as in SFT (ending in EOS), right-padded with ``tokenizer``'s pad id."""
    ids = [
        render_prompt(tokenizer, p, "auto") + response_ids(tokenizer, p, r, "auto") for p, r in zip(PROMPTS, RESPONSES)
    ]
    assert all(seq[-1] == tokenizer.eos_token_id for seq in ids)
    return collate([Example(seq, [True] * len(seq)) for seq in ids], tokenizer.pad_token_id, padding_side="right")


@torch.no_grad()
def _hf_scores(folder, pad_token_id=None) -> torch.Tensor:
    """Scores from transformers' own ``AutoModelForSequenceClassification`` and the folder's tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, info = AutoModelForSequenceClassification.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if pad_token_id is not None:  # what a pad = EOS folder would have said
        model.config.pad_token_id = tokenizer.pad_token_id = pad_token_id
    batch = _right_padded(tokenizer)
    return model.eval()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)


def _ours(rm, tokenizer) -> torch.Tensor:
    return torch.tensor(score_texts(rm, tokenizer, PROMPTS, RESPONSES))


def test_hugging_face_scores_our_folder_as_we_do(tmp_path, tokenizer):
    rm = _trained_like_rm(tokenizer, bias=-0.75)
    rm.save_pretrained(tmp_path / "rm", tokenizer, parent="sft")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["architectures"] == ["Gemma3TextForSequenceClassification"] and len(config["id2label"]) == 1
    assert (config["normalize_reward"], config["mean"], config["std"]) == (True, 0.75, 1.0)  # OpenRLHF's keys
    assert not (tmp_path / "rm" / HEAD_FILE).exists()
    ours = _ours(rm, tokenizer)
    hf = _hf_scores(tmp_path / "rm")
    torch.testing.assert_close(hf, ours, rtol=1e-5, atol=1e-5)
    loaded, tok = load_reward_model(tmp_path / "rm")
    torch.testing.assert_close(_ours(loaded, tok), hf, rtol=1e-5, atol=1e-5)
    assert float(loaded.normalization_bias) == -0.75 and loaded.parent == "sft"
    # what PPO loads: the same scores plus the saved bias, as OpenRLHF's --normalize_reward gives
    normalized, tok = load_reward_model(tmp_path / "rm", normalized=True)
    torch.testing.assert_close(_ours(normalized, tok), hf - 0.75, rtol=1e-5, atol=1e-5)
    rm.normalize = True
    torch.testing.assert_close(_ours(rm, tokenizer), ours - 0.75)


def test_transformers_keeps_the_score_head_bias_free():
    """Why the bias stays outside the weights: Gemma's and Llama's ``score`` has no bias to load,
    and it reads an RMSNorm's output (no constant feature). Should transformers add one, fold it in."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    for config in (
        tiny_model(tiny_tokenizer()).config,
        LlamaConfig(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=64,
        ),
    ):
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
        assert model.score.bias is None, type(model).__name__
        assert "RMSNorm" in type(model.base_model.norm).__name__


def test_pad_equal_to_eos_is_saved_apart_so_hugging_face_reads_the_final_eos(tmp_path):
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # as ensure_pad_token does for a tokenizer without one
    rm = _trained_like_rm(tokenizer)
    rm.config.pad_token_id = tokenizer.eos_token_id
    rm.save_pretrained(tmp_path / "rm", tokenizer)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the caller's tokenizer is left alone
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    assert config["pad_token_id"] == tokenizer.unk_token_id
    ours = _ours(rm, tokenizer)
    torch.testing.assert_close(_hf_scores(tmp_path / "rm"), ours, rtol=1e-5, atol=1e-5)
    # pad = EOS would read the token before each final EOS: the case above is not passed by luck
    stale = _hf_scores(tmp_path / "rm", pad_token_id=tokenizer.eos_token_id)
    assert not torch.allclose(stale, ours, atol=1e-3)
    loaded, tok = load_reward_model(tmp_path / "rm")
    assert tok.pad_token_id == loaded.config.pad_token_id == tokenizer.unk_token_id
    torch.testing.assert_close(_ours(loaded, tok), ours)


def test_pad_equal_to_eos_falls_back_to_bos_and_a_causal_lm_tokenizer_is_set_apart(tmp_path):
    folder = save_tiny(str(tmp_path / "lm"))
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.unk_token = tokenizer.eos_token
    tokenizer.save_pretrained(folder)
    rm, tok = load_reward_model(folder, new_head=True)
    assert tok.pad_token_id == rm.config.pad_token_id == tokenizer.bos_token_id


def _save_trl_style(folder, tokenizer, head: torch.Tensor) -> None:
    """What TRL's RewardTrainer leaves: ``AutoModelForSequenceClassification`` (one label) + tokenizer."""
    from transformers import AutoModelForSequenceClassification

    config = tiny_model(tokenizer).config
    config.num_labels, config.pad_token_id = 1, tokenizer.pad_token_id  # as TRL sets it
    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_config(config)
    with torch.no_grad():
        model.score.weight.copy_(head)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def test_trl_style_reward_model_loads_with_its_trained_head(tmp_path, tokenizer):
    head = torch.randn(1, 32, generator=torch.Generator().manual_seed(5)) * 14  # norm about 80, as in the issue
    _save_trl_style(tmp_path / "trl", tokenizer, head)
    rm, tok = load_reward_model(tmp_path / "trl")
    torch.testing.assert_close(rm.head.weight, head)
    assert float(rm.normalization_bias) == 0.0
    torch.testing.assert_close(_ours(rm, tok), _hf_scores(tmp_path / "trl"), rtol=1e-5, atol=1e-4)


def test_a_trl_style_model_saved_with_pad_equal_to_eos_is_read_where_hugging_face_reads(tmp_path):
    """TRL pads with EOS when the tokenizer has no pad token: Hugging Face then reads the token
    before each final EOS, and so do we (padded or packed), also after saving again."""
    tokenizer = tiny_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    _save_trl_style(tmp_path / "trl", tokenizer, torch.randn(1, 32, generator=torch.Generator().manual_seed(4)) * 14)
    hf = _hf_scores(tmp_path / "trl")
    rm, tok = load_reward_model(tmp_path / "trl")
    assert rm.skip_token_id == tok.pad_token_id == tokenizer.eos_token_id
    torch.testing.assert_close(_ours(rm, tok), hf, rtol=1e-5, atol=1e-4)
    ids = [render_prompt(tok, p, "auto") + response_ids(tok, p, r, "auto") for p, r in zip(PROMPTS, RESPONSES)]
    packed = score_sequences(rm, ids, tok.pad_token_id, packing=True)
    torch.testing.assert_close(packed, hf, rtol=1e-5, atol=1e-4)
    rm.skip_token_id = None  # reading the final EOS gives other scores: the case above is not passed by luck
    assert not torch.allclose(_ours(rm, tok), hf, atol=1e-3)
    rm.skip_token_id = tokenizer.eos_token_id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rm.save_pretrained(tmp_path / "again", tok)
    torch.testing.assert_close(_hf_scores(tmp_path / "again"), hf, rtol=1e-5, atol=1e-4)
    again, tok = load_reward_model(tmp_path / "again")
    torch.testing.assert_close(_ours(again, tok), hf, rtol=1e-5, atol=1e-4)


def test_openrlhf_value_head_name_and_its_normalization_are_read(tmp_path, tokenizer):
    """Older OpenRLHF names the head ``value_head`` and keeps ``(score - mean) / std`` in config.json."""
    _save_trl_style(tmp_path / "hf", tokenizer, torch.randn(1, 32, generator=torch.Generator().manual_seed(2)))
    expected = _hf_scores(tmp_path / "hf")
    folder = tmp_path / "openrlhf"
    folder.mkdir()
    state = load_file(str(tmp_path / "hf" / "model.safetensors"))
    state["value_head.weight"] = state.pop("score.weight")
    save_file(state, str(folder / "model.safetensors"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config.update(normalize_reward=True, mean=0.3, std=2.0)
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(folder)
    rm, tok = load_reward_model(folder)
    torch.testing.assert_close(_ours(rm, tok), expected, rtol=1e-5, atol=1e-5)  # transformers ignores mean, std
    rm, tok = load_reward_model(folder, normalized=True)
    torch.testing.assert_close(_ours(rm, tok), (expected - 0.3) / 2.0, rtol=1e-5, atol=1e-5)


def test_a_model_without_a_head_is_an_error_unless_a_new_head_is_asked_for(tmp_path):
    folder = save_tiny(str(tmp_path / "lm"))
    with pytest.raises(ModelLoadError, match="no reward head.*rm train --model"):
        load_reward_model(folder)
    rm, _ = load_reward_model(folder, seed=1, new_head=True)
    again, _ = load_reward_model(folder, seed=1, new_head=True)
    torch.testing.assert_close(rm.head.weight, again.head.weight)  # seeded


def _save_older_layout(rm: RewardModel, folder, tokenizer) -> None:
    """The layout before this change: trunk as a base model, head and bias beside it."""
    rm.trunk.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({"weight": rm.head.weight.detach().contiguous()}, str(folder / HEAD_FILE))
    meta = {"normalization_bias": float(rm.normalization_bias), "parent": "sft"}
    (folder / REWARD_JSON).write_text(json.dumps(meta))


def test_older_folders_still_load_with_a_warning_and_convert_by_saving_again(tmp_path, tokenizer):
    rm = _trained_like_rm(tokenizer, bias=0.5)
    _save_older_layout(rm, tmp_path / "old", tokenizer)
    with pytest.warns(UserWarning, match="older reward model layout.*save_pretrained"):
        loaded, tok = load_reward_model(tmp_path / "old")
    ours = _ours(rm, tokenizer)
    torch.testing.assert_close(_ours(loaded, tok), ours)
    assert loaded.parent == "sft" and float(loaded.normalization_bias) == 0.5
    loaded.save_pretrained(tmp_path / "new", tok)
    torch.testing.assert_close(_hf_scores(tmp_path / "new"), ours, rtol=1e-5, atol=1e-5)
    fresh = _trained_like_rm(tokenizer)  # resume and cross-validation load weights in place, either layout
    for folder in ("old", "new"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            load_reward_weights(fresh, tmp_path / folder)
        torch.testing.assert_close(_ours(fresh, tokenizer), ours)


def test_a_value_model_with_lora_adapters_is_saved_merged(tmp_path, tokenizer):
    """PPO's value model may carry LoRA adapters on its trunk: the folder holds the merged weights."""
    from peft import LoraConfig, get_peft_model

    rm = _trained_like_rm(tokenizer, bias=0.25)
    rm.trunk = get_peft_model(rm.trunk, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in rm.trunk.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(len(name)))
    rm.save_pretrained(tmp_path / "value", tokenizer)
    assert hasattr(rm.trunk, "merge_and_unload")  # the live model keeps its adapters
    ours = _ours(rm, tokenizer)
    torch.testing.assert_close(_hf_scores(tmp_path / "value"), ours, rtol=1e-5, atol=1e-5)
    loaded, tok = load_reward_model(tmp_path / "value")
    torch.testing.assert_close(_ours(loaded, tok), ours, rtol=1e-5, atol=1e-5)
