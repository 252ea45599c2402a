"""``policy_weights``: the weights the vLLM engine is given, without vLLM (plain torch).

One process: a plain model gives its state dict. Two processes (``accelerate launch`` with the
shipped FSDP2 and ZeRO-3 configs, gloo on CPU, as in test_distributed): a LoRA model whose
every tensor is sharded gives, on each process, the full merged weights that one process
computes with peft's ``merge_and_unload``.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers_launch import SHIM, accelerate_launch
from transformers import AutoModelForCausalLM

from grouptune.engines.vllm import policy_weights

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])

# Each process: the LoRA model with adapters drawn from a seed (as merged_reference draws them), sharded by accelerate (every
# tensor: ZeRO-3 otherwise keeps tensors under 1e5 elements whole), then policy_weights.
SCRIPT = """
import sys
import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM
from grouptune.engines.vllm import policy_weights

model_dir, out = sys.argv[1], sys.argv[2]
acc = Accelerator()
model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(**LORA))
torch.manual_seed(1)
with torch.no_grad():
    for n, p in model.named_parameters():
        if "lora_" in n:
            p.normal_(0, 0.5)
if acc.state.deepspeed_plugin is not None:
    ds = acc.state.deepspeed_plugin.deepspeed_config
    ds["train_micro_batch_size_per_gpu"] = 1
    ds.setdefault("zero_optimization", {})["stage3_param_persistence_threshold"] = 0
model, _ = acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
params = list(acc.unwrap_model(model).parameters())
if acc.state.deepspeed_plugin is not None:
    assert all(p.ds_tensor.numel() < p.ds_numel for p in params if p.ds_numel > 1)
else:
    assert all(isinstance(p, DTensor) for p in params)
weights = {k: v.clone() for k, v in policy_weights(model, acc)}
torch.save(weights, f"{out}/rank{acc.process_index}.pt")
print("gathered", len(weights))
"""


def merged_reference(model_dir) -> dict[str, torch.Tensor]:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), LoraConfig(**LORA))
    torch.manual_seed(1)  # the adapters drawn as in SCRIPT (B starts at zero otherwise: nothing to merge)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.normal_(0, 0.5)
    return model, copy.deepcopy(model).merge_and_unload().state_dict()


def test_plain_model_gives_its_state_dict(tiny_llama):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    weights = dict(policy_weights(model))
    expected = model.state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], v) for k, v in expected.items())


def test_lora_merged_aside(tiny_qwen2):
    model, expected = merged_reference(tiny_qwen2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    weights = dict(policy_weights(model))
    assert weights.keys() == expected.keys()
    for k, v in expected.items():
        torch.testing.assert_close(weights[k], v, rtol=0, atol=1e-6, msg=k)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "the training model changed"
    assert not model.base_model.model.model.layers[0].self_attn.q_proj.merged


def test_lora_with_modules_to_save_gives_the_trained_copy(tiny_llama):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(**LORA, modules_to_save=["lm_head"])
    )
    with torch.no_grad():
        model.base_model.model.lm_head.modules_to_save["default"].weight.add_(1.0)
    weights = dict(policy_weights(model))
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], v) for k, v in expected.items())
    with model.disable_adapter():  # the original copy then
        original = dict(policy_weights(model))["lm_head.weight"]
    assert torch.equal(original + 1.0, weights["lm_head.weight"])


def test_lora_variants_are_refused(tiny_qwen2):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_qwen2), LoraConfig(**LORA, use_dora=True)
    )
    with pytest.raises(NotImplementedError, match=r"q_proj: merging a LoRA variant \(e\.g\. DoRA\)"):
        dict(policy_weights(model))


@pytest.mark.parametrize("engine", ["fsdp", "deepspeed_zero3"])
def test_sharded_lora_model_gives_the_full_merged_weights_on_every_process(engine, tiny_qwen2, tmp_path):
    (tmp_path / "two.py").write_text(SHIM + f"LORA = {LORA!r}\n" + SCRIPT)
    code, log = accelerate_launch(engine, 2, tmp_path / "two.py", tiny_qwen2, tmp_path)
    assert code == 0, log[-3000:]
    _, expected = merged_reference(tiny_qwen2)
    for rank in (0, 1):
        weights = torch.load(tmp_path / f"rank{rank}.pt")
        assert weights.keys() == expected.keys()
        for k, v in expected.items():
            torch.testing.assert_close(
                weights[k], v, rtol=0, atol=1e-6, msg=lambda m, k=k, r=rank: f"rank {r} {k}: {m}"
            )
