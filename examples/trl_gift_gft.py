"""A TRL user's switch from GRPO to GIFT and to GFT: one import, plus the method's own settings.

    python examples/trl_gift_gft.py --method grpo                 # TRL's GRPO, the starting point
    python examples/trl_gift_gft.py --method gift                 # GIFT (docs/methods.md#gift)
    python examples/trl_gift_gft.py --method gft                  # GFT (docs/methods.md#gft)
    accelerate launch examples/trl_gift_gft.py --method gift --use-vllm   # TRL's vLLM, DeepSpeed... as before
    python examples/trl_gift_gft.py --method gft --smoke          # 2 steps, tiny local model, CPU, offline

Everything else is the user's existing TRL setup: the model, the data set, the reward
function, generation (transformers or vLLM), PEFT, DeepSpeed, logging. What each method adds:

    GIFT  gift_beta, gift_reference ("old" | "initial"); a micro-batch holds whole groups, so
          per_device_train_batch_size is a multiple of num_generations.
    GFT   num_off_policy members per group come from the data set: the expert demonstration
          (column "completion") and teacher responses ("teacher_completions"); they are scored by
          the same reward functions as the sampled ones. num_generations is the whole group.
"""

import argparse
import tempfile

import torch
from datasets import Dataset, load_dataset
from trl import GRPOConfig, GRPOTrainer

from grouptune.integrations.trl import GFTConfig, GFTTrainer, GIFTConfig, GIFTTrainer
from grouptune.rewards import GSM8KReward

SUFFIX = " Let's think step by step and output the final answer after ####."


# ----------------------------------------------------------------------------- data and model


def gsm8k() -> Dataset:
    """GSM8K in TRL's prompt-completion format, plus the gold answer the reward reads."""
    ds = load_dataset("openai/gsm8k", "main", split="train")
    return ds.map(
        lambda row: {
            "prompt": [{"role": "user", "content": row["question"] + SUFFIX}],
            "completion": row["answer"],  # the expert demonstration ("... #### 72"): GFT's off-policy member
            "answer": row["answer"],  # the reward function's gold
        },
        remove_columns=["question"],
    )


def smoke_setup(path: str) -> tuple[str, Dataset]:
    """A tiny random Qwen2 with grouptune's character tokenizer, and the testbed's arithmetic rows."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from grouptune.testbed.arithmetic import generate_split
    from grouptune.testbed.tokenizer import build_tokenizer

    tok = build_tokenizer()
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        )
    )  # fmt: skip
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)  # a path, so GIFT's "initial" reference can be loaded like any model
    tok.save_pretrained(path)
    return path, Dataset.from_list(generate_split(16, seed=0))


# ----------------------------------------------------------------------------- the switch


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["grpo", "gift", "gft"], default="gift")
    p.add_argument("--model", default="Qwen/Qwen2.5-0.5B-Instruct")
    p.add_argument("--use-vllm", action="store_true")
    p.add_argument("--smoke", action="store_true", help="2 steps of a tiny local model on CPU, no network")
    cli = p.parse_args()

    scratch = tempfile.TemporaryDirectory(prefix="grouptune-smoke-") if cli.smoke else None  # removed at exit
    model, train = smoke_setup(scratch.name) if cli.smoke else (cli.model, gsm8k())
    reward = GSM8KReward("flexible")  # TRL's call shape: f(prompts, completions, answer, **columns)
    shared = dict(
        output_dir=f"runs/trl-{cli.method}", num_generations=8, per_device_train_batch_size=8,
        gradient_accumulation_steps=4, learning_rate=1e-6, max_completion_length=512,
        logging_steps=1, use_vllm=cli.use_vllm, report_to="none",
    )  # fmt: skip
    if cli.smoke:
        shared.update(
            num_generations=4, per_device_train_batch_size=4, gradient_accumulation_steps=1, max_steps=2,
            max_completion_length=32, learning_rate=1e-3, use_cpu=True, bf16=False, gradient_checkpointing=False,
            output_dir=scratch.name, save_strategy="no",
        )  # fmt: skip

    if cli.method == "grpo":
        trainer = GRPOTrainer(model, reward_funcs=reward, args=GRPOConfig(**shared), train_dataset=train)
    elif cli.method == "gift":
        config = GIFTConfig(**shared, gift_beta=1.0, gift_reference="old")
        trainer = GIFTTrainer(model, reward_funcs=reward, args=config, train_dataset=train)
    else:  # the paper's 4 + 4 groups: num_off_policy=4 with 3 teacher responses per row
        config = GFTConfig(**shared, num_off_policy=1, gft_tau=0.5)
        trainer = GFTTrainer(model, reward_funcs=reward, args=config, train_dataset=train)
    trainer.train()
    return trainer


if __name__ == "__main__":
    main()
