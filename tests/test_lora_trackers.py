"""LoRA / QLoRA, gradient checkpointing and experiment trackers, for SFT, RM and PPO (issue 21, points 4-5)."""

import copy
import importlib.util
import json

import pytest
import torch
from accelerate.tracking import GeneralTracker

from instructgpt.config import ConfigError, parse
from instructgpt.models.checkpointing import checkpoint_layers
from instructgpt.models.reward import RewardModel, load_reward_model
from instructgpt.models.tiny import save_tiny, tiny_model, tiny_tokenizer
from instructgpt.training import metrics
from instructgpt.training.lm import CausalLMLoss
from instructgpt.training.metrics import offline_by_default, read_metrics, tracker_names
from instructgpt.training.options import TrainerOptions
from instructgpt.training.ppo_config import PPOConfig
from instructgpt.training.rm import RMConfig, train_rm
from instructgpt.training.sft import SFTConfig, train_sft
from tests.helpers.rm_run import TINY_DEFAULTS as RM_TINY
from tests.helpers.rm_run import write_rankings
from tests.helpers.sft_run import TINY_DEFAULTS as SFT_TINY

pytest.importorskip("peft")
IDS = torch.tensor([[1, 40, 50, 60, 70, 80, 2], [1, 90, 91, 92, 2, 0, 0]])
MASK = (IDS != 0).long()


def _sft(demos, out, **overrides):
    return SFTConfig(model="tiny-random", data=(demos,), out_dir=out, **{**SFT_TINY, "epochs": 1, **overrides})


def _rm(rankings, out, **overrides):
    return RMConfig(model="tiny-random", data=(rankings,), out_dir=out, **{**RM_TINY, **overrides})


def _base_name(name: str) -> str:
    """A peft parameter's name in the plain model (``base_model.model.`` prefix and ``base_layer.`` gone)."""
    return name.removeprefix("base_model.model.").replace("base_layer.", "")


def _only_adapters_changed(before: dict, adapted: torch.nn.Module, prefix: str = "") -> None:
    lora = {n: p for n, p in adapted.named_parameters() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert any(bool(p.abs().sum() > 0) for n, p in lora.items() if "lora_B" in n)  # B starts at 0: it was trained
    frozen = {prefix + _base_name(n): p for n, p in adapted.named_parameters() if "lora_" not in n}
    for name, p in frozen.items():
        if name in before:  # (a reward model's head is trained, and compared by the caller)
            assert torch.equal(p, before[name]), name


@pytest.fixture
def rankings(tmp_path):
    return write_rankings(tmp_path / "rankings.jsonl", 16, seed=0)


def test_sft_lora_trains_adapters_only_and_both_saves_load(demos_file, tmp_path):
    from peft import PeftModel

    from instructgpt.models.loader import load_model

    tokenizer = tiny_tokenizer()
    for save in ("merged", "adapter"):
        model = tiny_model(tokenizer)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        final = train_sft(_sft(demos_file, tmp_path / save, lora_rank=4, lora_alpha=8, save=save), model, tokenizer)
        _only_adapters_changed(before, model)  # get_peft_model adapted `model` in place
        with torch.no_grad():
            expected = model(input_ids=IDS, attention_mask=MASK).logits
        if save == "merged":
            loaded, _ = load_model(str(final))  # a plain Hugging Face folder
            assert not any("lora" in n for n, _ in loaded.named_parameters())
        else:
            assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
            loaded = PeftModel.from_pretrained(tiny_model(tokenizer), str(final))
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=IDS, attention_mask=MASK).logits, expected, atol=1e-5, rtol=0)


def test_sft_lora_resume_ends_with_the_uninterrupted_weights(demos_file, tmp_path):
    tokenizer = tiny_tokenizer()
    whole = tiny_model(tokenizer)
    train_sft(_sft(demos_file, tmp_path / "whole", lora_rank=4), whole, tokenizer)
    train_sft(_sft(demos_file, tmp_path / "cut", lora_rank=4, max_steps=3), tiny_model(tokenizer), tokenizer)
    resumed = tiny_model(tokenizer)  # a fresh process: base weights from the start, adapters from the checkpoint
    train_sft(_sft(demos_file, tmp_path / "cut", lora_rank=4), resumed, tokenizer)
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
    assert read_metrics(tmp_path / "cut")[-1]["step"] == read_metrics(tmp_path / "whole")[-1]["step"]


def test_rm_lora_trains_adapters_and_head_and_saves_the_merged_model(rankings, tmp_path):
    tokenizer = tiny_tokenizer()
    model = RewardModel.from_causal_lm(tiny_model(tokenizer))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    final = train_rm(_rm(rankings, tmp_path / "run", lora_rank=4), model, tokenizer)
    assert not torch.equal(model.head.weight, before["head.weight"]) and model.head.weight.requires_grad
    _only_adapters_changed(before, model.trunk, prefix="trunk.")
    loaded, _ = load_reward_model(final)  # the reward-model folder, as without LoRA
    assert not any("lora" in n for n, _ in loaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(IDS, MASK), model(IDS, MASK), atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="save: a reward model is saved merged"):
        _rm(rankings, tmp_path / "adapter", lora_rank=4, save="adapter").validate()


def test_rm_lora_resume_ends_with_the_uninterrupted_adapters_and_head(rankings, tmp_path):
    tokenizer = tiny_tokenizer()
    models = [RewardModel.from_causal_lm(tiny_model(tokenizer)) for _ in range(3)]
    train_rm(_rm(rankings, tmp_path / "whole", lora_rank=4, epochs=2), models[0], tokenizer)
    train_rm(_rm(rankings, tmp_path / "cut", lora_rank=4, epochs=2, max_steps=2), models[1], tokenizer)
    train_rm(_rm(rankings, tmp_path / "cut", lora_rank=4, epochs=2), models[2], tokenizer)
    whole, resumed = (dict(m.named_parameters()) for m in (models[0], models[2]))
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], atol=1e-6, rtol=0, msg=name)


def _loss_and_grads(model, checkpointed: bool, train: bool):
    model = copy.deepcopy(model)
    if checkpointed:
        checkpoint_layers(model)
    calls = []
    layer = next(m for m in model.modules() if isinstance(m, torch.nn.ModuleList))[0]
    layer.mlp.register_forward_hook(lambda *_: calls.append(1))
    model.train(train)
    torch.manual_seed(7)  # residual dropout draws from the global generator
    if isinstance(model, RewardModel):
        loss = model.values(IDS, MASK).square().mean()
    else:
        loss = CausalLMLoss(model, residual_dropout=0.2)(IDS, MASK.bool(), attention_mask=MASK, token_weight=0.1)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}, len(calls)


@pytest.mark.parametrize("kind", ["sft-train-dropout", "value-eval"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(kind):
    """Tolerance 1e-6 (fp32): the recomputed layers run the same kernels on the same inputs; dropout's RNG state is
    restored. In eval() mode, as PPO runs, the layers are still recomputed (the MLP runs twice)."""
    tokenizer = tiny_tokenizer()
    lm = tiny_model(tokenizer)
    model = lm if kind.startswith("sft") else RewardModel.from_causal_lm(lm)
    train = kind.endswith("dropout")
    loss, grads, calls = _loss_and_grads(model, False, train)
    loss_ckpt, grads_ckpt, calls_ckpt = _loss_and_grads(model, True, train)
    assert (calls, calls_ckpt) == (1, 2)
    torch.testing.assert_close(loss_ckpt, loss, atol=1e-6, rtol=0)
    assert grads.keys() == grads_ckpt.keys() and len(grads) == len(list(model.parameters()))
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-5, msg=name)


def test_sft_run_with_gradient_checkpointing_logs_the_same_losses(demos_file, tmp_path):
    tokenizer = tiny_tokenizer()
    for name, flag in (("plain", False), ("ckpt", True)):
        config = _sft(demos_file, tmp_path / name, gradient_checkpointing=flag, max_steps=3, residual_dropout=0.1)
        train_sft(config, tiny_model(tokenizer), tokenizer)
    plain, ckpt = ([r["sft/loss"] for r in read_metrics(tmp_path / n)] for n in ("plain", "ckpt"))
    torch.testing.assert_close(ckpt, plain, rtol=1e-5, atol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the refusal on a machine without CUDA")
def test_qlora_is_refused_on_cpu_naming_bitsandbytes_and_the_device(demos_file, tmp_path):
    tokenizer = tiny_tokenizer()
    with pytest.raises(ConfigError, match=r"qlora: .*bitsandbytes.*cpu"):
        train_sft(_sft(demos_file, tmp_path / "q", lora_rank=4, qlora=True), tiny_model(tokenizer), tokenizer)
    with pytest.raises(ConfigError, match="qlora: .*lora_rank"):
        _sft(demos_file, tmp_path / "q", qlora=True).validate()


def test_the_three_stages_share_the_options_and_check_them():
    from dataclasses import fields

    shared = {f.name for f in fields(TrainerOptions)}
    for cls in (SFTConfig, RMConfig, PPOConfig):
        assert shared <= {f.name for f in fields(cls)}, cls
    argv = ["--lora-rank", "4", "--save", "adapter", "--gradient-checkpointing", "--report-to", "tensorboard", "wandb"]
    config = parse(SFTConfig, argv, prog="sft")
    assert (config.lora_rank, config.save, config.gradient_checkpointing) == (4, "adapter", True)
    assert config.report_to == ("tensorboard", "wandb")
    with pytest.raises(ConfigError, match="save"):
        RMConfig(save="adapter").validate()  # adapters need LoRA
    with pytest.raises(ConfigError, match="precision"):
        SFTConfig(lora_rank=4, precision="bf16-weights").validate()
    with pytest.raises(ConfigError, match="report_to"):
        PPOConfig(report_to=("neptune",)).validate()  # type: ignore[arg-type]


class Recorder(GeneralTracker):
    """A tracker that keeps what accelerate hands it."""

    name = "recorder"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.config, self.logged, self.finished = None, [], False

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.config = values

    def log(self, values, step=None, **kwargs):
        self.logged.append((step, dict(values)))

    def finish(self):
        self.finished = True


def _as_logged(run_dir):
    """metrics.jsonl as a tracker should have received it: (step, numeric metrics)."""
    skip = {"step", "time"}
    return [(r["step"], {k: v for k, v in r.items() if k not in skip}) for r in read_metrics(run_dir)]


def test_trackers_get_the_metrics_jsonl_numbers_at_the_same_steps(demos_file, rankings, tmp_path, monkeypatch):
    recorders = []

    def recorder(report_to, run_dir):
        recorders.append(Recorder())
        return [recorders[-1]]

    monkeypatch.setattr(metrics, "tracker_names", recorder)
    tokenizer = tiny_tokenizer()
    train_sft(_sft(demos_file, tmp_path / "sft", report_to=("tensorboard",)), tiny_model(tokenizer), tokenizer)
    model = RewardModel.from_causal_lm(tiny_model(tokenizer))
    train_rm(_rm(rankings, tmp_path / "rm", report_to=("tensorboard",), val_fraction=0.25), model, tokenizer)
    for run, stage, recorded in zip(("sft", "rm"), ("sft", "rm"), recorders):
        assert recorded.logged == _as_logged(tmp_path / run) and recorded.finished
        assert any(f"{stage}/loss" in values for _, values in recorded.logged)
        assert recorded.config["lr"] == SFT_TINY["lr"] and recorded.config["report_to"] == "('tensorboard',)"


def test_tensorboard_tracker_writes_the_run(demos_file, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tokenizer = tiny_tokenizer()
    train_sft(_sft(demos_file, tmp_path / "run", report_to=("tensorboard",)), tiny_model(tokenizer), tokenizer)
    (folder,) = (tmp_path / "run" / "tensorboard").iterdir()
    events = EventAccumulator(str(folder)).Reload()
    logged = [(e.step, e.value) for e in events.Scalars("sft/loss")]
    expected = [(r["step"], r["sft/loss"]) for r in read_metrics(tmp_path / "run")]
    assert [s for s, _ in logged] == [s for s, _ in expected]
    torch.testing.assert_close([v for _, v in logged], [v for _, v in expected], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", ["wandb", "trackio", "mlflow", "tensorboard"])
def test_a_tracker_without_its_package_is_a_clear_error(name, tmp_path):
    if importlib.util.find_spec(name) is not None:
        pytest.skip(f"{name} is installed here")
    with pytest.raises(ConfigError, match=rf"report_to: '{name}' needs the {name} package.*pip install {name}"):
        tracker_names((name,), tmp_path)


def test_online_trackers_are_offline_unless_the_environment_says_otherwise(tmp_path):
    environ: dict[str, str] = {}
    offline_by_default(("wandb", "mlflow"), tmp_path, environ)
    assert environ["WANDB_MODE"] == "offline" and environ["WANDB_DIR"] == str(tmp_path.resolve())
    assert environ["MLFLOW_TRACKING_URI"] == (tmp_path.resolve() / "mlruns").as_uri()
    chosen = {"WANDB_MODE": "online", "MLFLOW_TRACKING_URI": "http://tracking:5000"}
    offline_by_default(("wandb", "mlflow"), tmp_path, chosen)
    assert chosen["WANDB_MODE"] == "online" and chosen["MLFLOW_TRACKING_URI"] == "http://tracking:5000"
    untouched: dict[str, str] = {}
    offline_by_default(("tensorboard",), tmp_path, untouched)
    assert untouched == {}


def test_ppo_with_lora_checkpointing_adapter_save_and_a_tracker(tmp_path, monkeypatch):
    """PPO takes the same options: LoRA adapters only, checkpointed layers, adapter folders, tracked metrics."""
    from peft import PeftModel

    from instructgpt.training.ppo import train_ppo
    from instructgpt.training.ppo_io import load_models

    tokenizer = tiny_tokenizer()
    policy = save_tiny(str(tmp_path / "sft"))
    RewardModel.from_causal_lm(tiny_model(tokenizer, seed=3), seed=3).save_pretrained(tmp_path / "rm", tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    records = ({"id": f"p{i}", "text": f"{i}", "user_id": "u", "source": "api"} for i in range(8))
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    recorder = Recorder()
    monkeypatch.setattr(metrics, "tracker_names", lambda report_to, run_dir: [recorder])
    config = PPOConfig(
        policy=policy,
        reward_model=str(tmp_path / "rm"),
        prompts=(prompts,),
        out_dir=tmp_path / "run",
        episodes=8,
        batch_size=8,
        minibatch_size=4,
        max_new_tokens=4,
        ptx_coef=0.0,
        lora_rank=4,
        gradient_checkpointing=True,
        save="adapter",
        report_to=("tensorboard",),
        precision="fp32",
        progress=False,
        template="raw",
    )
    models = load_models(config, torch.device("cpu"))
    final = train_ppo(config, models)
    assert all("lora_" in n for n, p in models.policy.named_parameters() if p.requires_grad)
    layer = next(m for m in models.policy.modules() if isinstance(m, torch.nn.ModuleList))[0]
    assert layer.forward.__func__.__name__ == "_checkpointed_forward"
    assert (final / "adapter_config.json").is_file() and not (final / "model.safetensors").exists()
    load_reward_model(final / "value")  # the value model: a merged reward-model folder
    last = PeftModel.from_pretrained(tiny_model(tokenizer), str(final / "last"))
    with torch.no_grad():
        torch.testing.assert_close(
            last(input_ids=IDS, attention_mask=MASK).logits,
            models.policy(input_ids=IDS, attention_mask=MASK).logits,
        )
    assert recorder.logged == _as_logged(tmp_path / "run") and "objective/kl" in recorder.logged[0][1]
