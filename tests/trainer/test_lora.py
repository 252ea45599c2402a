"""LoRA through peft, and the memory savers: bf16 weights, bf16 autocast, gradient checkpointing.

With LoRA the reference policy (GRPO's KL, GIFT's ``initial`` reference) is the base model
with the adapter disabled: no second copy of the weights.
"""

from __future__ import annotations

import pytest
import torch
from helpers_runs import make_cfg, weights
from transformers import AutoModelForCausalLM

from grouptune.rollout import completion_logprobs
from grouptune.trainer import Trainer

LORA = {"model.lora_r": 4, "model.lora_alpha": 8, "method.kl_beta": 0.1, "model.merge_lora_on_save": True}
# A reward with spread on a random model (the verifiers give it 0 everywhere, hence no gradient).
LENGTH_REWARD = "def length(prompts, completions, **columns):\n    return [len(c) / 10 for c in completions]\n"


def length_reward(tmp_path) -> list[str]:
    path = tmp_path / "length_reward.py"
    path.write_text(LENGTH_REWARD)
    return [f"{path}:length"]


def logprobs_by_group(model, batch) -> torch.Tensor:
    """Per-group log-probs of ``batch`` under ``model``, laid out as ``add_fixed_logprobs`` does."""
    out = torch.zeros(batch.completion_ids.shape)
    G = batch.group_size
    with torch.no_grad():
        for g in range(batch.num_groups):
            logp, _ = completion_logprobs(model.eval(), batch.groups(g, g + 1).trimmed())
            out[g * G : (g + 1) * G, : logp.shape[1]] = logp
    return out


def test_lora_trains_the_adapter_only_and_its_reference_is_the_base_model(tiny_llama, tiny_data, tmp_path):
    cfg = make_cfg(tiny_llama, tiny_data, tmp_path / "run", "grpo", **LORA, **{"reward.functions": length_reward(tmp_path)})
    trainer = Trainer(cfg)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    policy = trainer.acc.unwrap_model(trainer.model)

    # No second copy of the model: the policy holds the base weights plus the adapter, nothing more.
    assert trainer.policy.reference is None
    adapter = {n for n, p in policy.named_parameters() if "lora_" in n}
    assert adapter and {n for n, p in policy.named_parameters() if p.requires_grad} == adapter
    n_adapter = sum(p.numel() for n, p in policy.named_parameters() if n in adapter)
    assert sum(p.numel() for p in policy.parameters()) == sum(p.numel() for p in base.parameters()) + n_adapter

    before = weights(policy)
    trainer.train()
    after = weights(policy)
    frozen = [k for k in before if "lora_" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen), "a base weight moved"
    assert all(not torch.equal(before[k], after[k]) for k in before if "lora_B" in k), "an adapter did not train"

    # Reference log-probs (adapter disabled) == the base model's; the policy's (adapter on) differ.
    batch, _ = trainer.make_batch()
    trainer.add_fixed_logprobs(batch)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(batch.ref_logp[mask], logprobs_by_group(base, batch)[mask], rtol=0, atol=1e-6)
    assert (logprobs_by_group(policy, batch)[mask] - batch.ref_logp[mask]).abs().max() > 1e-4

    # merge_lora_on_save: a plain transformers model, = base + scale * B @ A on the adapted layers.
    final = tmp_path / "run" / "final"
    assert not (final / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(final).state_dict()
    assert merged.keys() == base.state_dict().keys()
    scale = LORA["model.lora_alpha"] / LORA["model.lora_r"]
    for name, w in base.state_dict().items():
        a_key = f"base_model.model.{name.removesuffix('.weight')}.lora_A.default.weight"
        delta = scale * after[a_key.replace("lora_A", "lora_B")] @ after[a_key] if a_key in after else 0.0
        torch.testing.assert_close(merged[name], w + delta, rtol=0, atol=1e-6, msg=name)
    assert any(f"{name.removesuffix('.weight')}.lora_A.default.weight" in k for k in after for name in merged)


def test_gift_initial_reference_under_lora_is_the_base_model(tiny_llama, tiny_data, tmp_path):
    trainer = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "run", "gift", **{
        "model.lora_r": 4, "method.gift_reference": "initial", "optim.total_batches": 1,
        "reward.functions": length_reward(tmp_path), "data.eval": []}))  # fmt: skip
    trainer.train()
    batch, _ = trainer.make_batch()
    trainer.add_fixed_logprobs(batch)
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    mask = batch.completion_mask.bool()
    torch.testing.assert_close(batch.ref_logp[mask], logprobs_by_group(base, batch)[mask], rtol=0, atol=1e-6)


def first_projection_dtype(trainer) -> list[torch.dtype]:
    """Record the output dtype of the first attention projection in every forward."""
    seen: list[torch.dtype] = []
    model = trainer.acc.unwrap_model(trainer.model)
    model = model.get_base_model() if hasattr(model, "get_base_model") else model  # under LoRA
    layer = model.model.layers[0].self_attn.q_proj
    layer.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    return seen


@pytest.mark.parametrize(
    "setting, param_dtype, compute_dtype",
    [
        ({"model.dtype": "bfloat16"}, torch.bfloat16, torch.bfloat16),
        ({"model.mixed_precision": "bf16"}, torch.float32, torch.bfloat16),  # float32 weights, bf16 matmuls
        ({"model.gradient_checkpointing": True}, torch.float32, torch.float32),
        ({"model.gradient_checkpointing": True, "model.lora_r": 4}, torch.float32, torch.float32),
    ],
)
def test_memory_savers_run_a_step(setting, param_dtype, compute_dtype, fresh_accelerate, tiny_llama, tiny_data,
                                  tmp_path):  # fmt: skip
    cfg = make_cfg(tiny_llama, tiny_data, tmp_path / "run", "gft", **{
        "optim.total_batches": 1, "optim.steps_per_rollout": 1, "data.eval": [], **setting})  # fmt: skip
    trainer = Trainer(cfg)
    model = trainer.acc.unwrap_model(trainer.model)
    assert {p.dtype for p in model.parameters()} == {param_dtype}
    if setting.get("model.gradient_checkpointing"):
        # the name since transformers 5.20; before it (vLLM's CPU build pins <5.20) is_gradient_checkpointing
        assert getattr(model, "is_activation_checkpointing", None) or model.is_gradient_checkpointing
    seen = first_projection_dtype(trainer)
    before = weights(model)
    last = trainer.train()
    assert torch.isfinite(torch.tensor(last["loss"]))
    changed = {k for k, v in weights(model).items() if not torch.equal(before[k], v)}
    assert changed and all("lora_" in k for k in changed) == ("model.lora_r" in setting), changed
    assert seen and set(seen[-1:]) == {compute_dtype}  # the last forward is the training step's


def test_qlora_loads_4bit_nf4_base_weights_and_prepares_them_for_training(tiny_llama, monkeypatch):
    """QLoRA's wiring (bitsandbytes needs a CUDA GPU, so the 4-bit load itself is not run here):
    ``from_pretrained`` gets an NF4 double-quantised config computing in ``model.dtype``, and the
    model goes through peft's ``prepare_model_for_kbit_training`` before the adapter is added."""
    import peft
    from transformers import BitsAndBytesConfig

    from grouptune import modeling, policy
    from grouptune.config import ConfigError, ModelConfig

    seen, real_load = {}, AutoModelForCausalLM.from_pretrained

    def load(path, **kw):
        seen.update(kw)
        kw.pop("quantization_config")
        return real_load(path, **kw)

    monkeypatch.setattr(modeling.AutoModelForCausalLM, "from_pretrained", load)
    prepared = []
    monkeypatch.setattr(peft, "prepare_model_for_kbit_training",
                        lambda model, use_gradient_checkpointing: prepared.append(use_gradient_checkpointing) or model)
    m = ModelConfig(name_or_path=str(tiny_llama), dtype="bfloat16", load_in_4bit=True, lora_r=4,
                    gradient_checkpointing=True)  # fmt: skip
    model, _ = modeling.load_model_and_tokenizer(m)
    q = seen["quantization_config"]
    assert isinstance(q, BitsAndBytesConfig) and q.load_in_4bit and q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_use_double_quant and q.bnb_4bit_compute_dtype == torch.bfloat16
    lora_model = policy.add_lora(model, m)
    assert prepared == [True] and hasattr(lora_model, "disable_adapter")

    with pytest.raises(ConfigError, match="lora_r"):
        modeling.load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_llama), load_in_4bit=True))
    seen.clear()
    modeling.load_model_and_tokenizer(ModelConfig(name_or_path=str(tiny_llama)))
    assert seen["quantization_config"] is None
