"""grouptune.integrations.trl: GIFT and GFT as TRL GRPOTrainer subclasses.

Every test builds a tiny Qwen2 (hidden 32, 2 layers) and a character-level tokenizer locally,
samples 4-token completions on CPU, and runs in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("trl")  # an optional extra; its absence is tested below in a subprocess

from datasets import Dataset  # noqa: E402
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM  # noqa: E402

from grouptune.advantages import group_advantages  # noqa: E402
from grouptune.integrations.trl import GFTConfig, GFTTrainer, GIFTConfig, GIFTTrainer  # noqa: E402
from grouptune.losses import gft_loss, gift_loss  # noqa: E402

CHARS = "0123456789+=#. abcdefghijklmnopqrstuvwxyz"
PROMPTS = ["1+1=", "2+3=", "4+4=", "5+2="]
ANSWERS = ["2", "5", "8", "7"]


# ----------------------------------------------------------------------------- fixtures


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character, plus <pad> (0) and <eos> (1); decoding glues characters."""
    vocab = {t: i for i, t in enumerate(["<pad>", "<eos>", "<unk>", *CHARS])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A saved tiny Qwen2: a path, so TRL can also load it as GIFT's `initial` reference."""
    tok = build_tokenizer()
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    path = tmp_path_factory.mktemp("tiny_qwen2")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def dataset() -> Dataset:
    """Prompts with a gold answer, a correct demonstration and a wrong teacher response."""
    return Dataset.from_dict({
        "prompt": PROMPTS,
        "answer": ANSWERS,
        "completion": ANSWERS,
        "teacher_completions": [[str(int(a) + 1)] for a in ANSWERS],
    })  # fmt: skip


def exact_match(completions, answer, **kwargs) -> list[float]:
    return [float(c.strip() == a) for c, a in zip(completions, answer)]


def digit_share(completions, **kwargs) -> list[float]:
    """A shaped reward with spread even for a random model."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


REWARDS = [exact_match, digit_share]  # several reward functions, summed with TRL's reward_weights


def common(tmp_path, **overrides) -> dict:
    settings = dict(
        output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4, num_generations=4,
        max_completion_length=4, max_steps=2, learning_rate=1e-2, logging_steps=1, report_to="none", use_cpu=True,
        bf16=False, gradient_checkpointing=False, save_strategy="no", seed=0, disable_dropout=True,
    )  # fmt: skip
    settings.update(overrides)
    return settings


def weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_trained(trainer, before: dict, prefix: str) -> None:
    after = weights(trainer.model)
    assert any(not torch.equal(before[n], after[n]) for n in before), "no parameter moved"
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {f"{prefix}/loss", "entropy", "reward"} <= logged, sorted(logged)


def token_logps(model, batch: dict) -> torch.Tensor:
    """Plain forward, independent of TRL's fused LM head: log p of each completion token (B, T)."""
    ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, batch["prompt_ids"].size(1) - 1 : -1]
    return logits.float().log_softmax(-1).gather(-1, batch["completion_ids"].unsqueeze(-1)).squeeze(-1)


def fixed_batch(tok, group_size: int = 4) -> dict:
    """Two groups of hand-written completions of uneven lengths (right-padded), prompts left-padded."""
    prompts = [PROMPTS[0]] * group_size + [PROMPTS[1]] * group_size
    completions = ["2", "3x", "22", "1+1", "5", "6", "55", "5 5"][: 2 * group_size]
    p = tok(prompts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt")
    c_ids = [tok(c, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for c in completions]
    width = max(map(len, c_ids))
    completion_ids = torch.tensor([ids + [tok.pad_token_id] * (width - len(ids)) for ids in c_ids])
    completion_mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in c_ids])
    return {
        "prompt_ids": p["input_ids"], "prompt_mask": p["attention_mask"],
        "completion_ids": completion_ids, "completion_mask": completion_mask,
        "num_items_in_batch": completion_mask.sum(),
    }  # fmt: skip


def loss_and_grads(model, loss_fn) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    loss = loss_fn()
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


# ----------------------------------------------------------------------------- TRL stays optional


def test_grouptune_imports_without_trl_and_the_integration_says_what_to_install():
    script = textwrap.dedent("""
        import sys
        sys.modules["trl"] = None  # as if TRL were not installed
        import grouptune, grouptune.advantages, grouptune.losses, grouptune.integrations
        try:
            import grouptune.integrations.trl
        except ImportError as err:
            print("ERROR:", err)
        else:
            print("imported")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "ERROR:" in out.stdout and "pip install grouptune[trl]" in out.stdout, out.stdout
    assert "trl>=1.16,<1.17" in out.stdout


# ----------------------------------------------------------------------------- two processes

TWO_PROCESS_SCRIPT = """
import json, sys, tempfile
sys.path.insert(0, {tests!r})
import test_integration_trl as t
from grouptune.integrations.trl import GFTConfig, GFTTrainer, GIFTConfig, GIFTTrainer

record = {{}}
for name, trainer_cls, config_cls, extra in (
    ("gift", GIFTTrainer, GIFTConfig, dict(gift_reference="initial")),
    ("gft", GFTTrainer, GFTConfig, dict(num_off_policy=2)),
):
    args = config_cls(**t.common(tempfile.mkdtemp(), max_steps=1, **extra))
    trainer = trainer_cls({model!r}, reward_funcs=t.REWARDS, train_dataset=t.dataset(), args=args)
    score = trainer._generate_and_score_completions
    def spy(rows, score=score, trainer=trainer, name=name):
        batch = score(rows)
        local = batch["rewards"] if name == "gift" else batch["advantages"]
        record[name] = dict(prompts=[r["prompt"] for r in rows], all_rewards=trainer._batch_rewards.tolist(),
                            local=local.tolist(), rank=trainer.accelerator.process_index)
        return batch
    trainer._generate_and_score_completions = spy
    trainer.train()
json.dump(record, open({out!r} + str(record["gft"]["rank"]), "w"))
"""


def test_two_processes_keep_groups_local_and_slice_the_batch_statistics(tiny_model, tmp_path):
    """torchrun, 2 CPU processes (gloo), 1 group of 4 per process: each process holds a whole group,
    TRL gathers the rewards of both, and each process keeps the statistics of its own rows."""
    from pathlib import Path

    script = tmp_path / "two.py"
    out = str(tmp_path / "rank")
    script.write_text(TWO_PROCESS_SCRIPT.format(tests=str(Path(__file__).parent), model=tiny_model, out=out))
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads(Path(out + str(r)).read_text()) for r in (0, 1)]
    for name in ("gift", "gft"):
        all_rewards = torch.tensor(ranks[0][name]["all_rewards"])  # (8,) both processes, group-contiguous
        assert ranks[1][name]["all_rewards"] == ranks[0][name]["all_rewards"]
        if name == "gft":
            on_policy = torch.tensor([False, False, True, True] * 2)
            expected = group_advantages(all_rewards, 4, on_policy_mask=on_policy)
        else:
            expected = all_rewards
        for r, record in enumerate(ranks):
            assert len(set(record[name]["prompts"])) == 1 and len(record[name]["prompts"]) == 4
            torch.testing.assert_close(torch.tensor(record[name]["local"]), expected[4 * r : 4 * r + 4])
        assert ranks[0][name]["prompts"] != ranks[1][name]["prompts"]


# ----------------------------------------------------------------------------- GIFT


@pytest.mark.parametrize(
    "reference, iterations",
    [("old", 1), ("old", 2), ("initial", 1)],  # 2 iterations: TRL computes the old log-probs itself
)
def test_gift_trainer_runs(tiny_model, tmp_path, reference, iterations):
    trainer = GIFTTrainer(
        tiny_model, reward_funcs=REWARDS, train_dataset=dataset(), eval_dataset=dataset(),
        args=GIFTConfig(**common(tmp_path, gift_reference=reference, num_iterations=iterations)),
    )  # fmt: skip
    assert (trainer.ref_model is not None) == (reference == "initial")
    assert trainer.args.beta == 0.0  # the user's config keeps TRL's KL off
    before = weights(trainer.model)
    trainer.train()
    assert_trained(trainer, before, "gift")
    if reference == "old":  # k = 0 on the batch's first use; its second use is measured from the same old policy
        degenerate = [e["gift/k_degenerate_frac"] for e in trainer.state.log_history if "gift/loss" in e]
        assert degenerate == ([1.0, 0.0] if iterations == 2 else [1.0, 1.0])
    assert torch.isfinite(torch.tensor(trainer.evaluate()["eval_loss"]))


def test_gift_initial_reference_with_peft_is_the_base_model(tiny_model, tmp_path):
    from peft import LoraConfig

    trainer = GIFTTrainer(
        tiny_model, reward_funcs=REWARDS, train_dataset=dataset(),
        args=GIFTConfig(**common(tmp_path, gift_reference="initial", max_steps=1)),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )  # fmt: skip
    assert trainer.ref_model is None  # TRL scores the reference with the adapter disabled
    trainer.model.train()
    batch = trainer._generate_and_score_completions(
        [{"prompt": p, "answer": a} for p, a in zip(PROMPTS[:1] * 4, "2222")]
    )
    with trainer.model.disable_adapter():
        base = token_logps(trainer.model, batch)
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(batch["ref_per_token_logps"][mask], base[mask], atol=1e-5, rtol=0)
    before = weights(trainer.model)
    trainer.train()
    assert_trained(trainer, before, "gift")


@pytest.mark.parametrize("reference", ["old", "initial"])
def test_gift_loss_equals_native_gift_loss_on_an_identical_batch(tiny_model, tmp_path, reference):
    trainer = GIFTTrainer(
        tiny_model, reward_funcs=exact_match, train_dataset=dataset(),
        args=GIFTConfig(**common(tmp_path, gift_reference=reference, gift_beta=0.7, gift_std_floor=1e-3)),
    )  # fmt: skip
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = fixed_batch(trainer.processing_class)
    mask = batch["completion_mask"]
    with torch.no_grad():  # a reference that differs from the policy, so k has spread
        ref = token_logps(model, batch) + 0.3 * torch.randn(
            mask.shape, generator=torch.Generator().manual_seed(0)
        )
    batch["old_per_token_logps" if reference == "old" else "ref_per_token_logps"] = ref
    batch["rewards"] = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 1.0, float("nan"), 1.0])

    ours, our_grads = loss_and_grads(model, lambda: trainer.compute_loss(model, batch))
    native, native_grads = loss_and_grads(
        model,
        lambda: gift_loss(
            token_logps(model, batch), ref, mask, batch["rewards"], 4, beta=0.7, eps=1e-6, std_floor=1e-3
        )[0],
    )
    assert abs(ours.item() - native.item()) <= 1e-6, (ours.item(), native.item())
    assert native.item() > 0.1
    for g_ours, g_native in zip(our_grads, native_grads, strict=True):
        torch.testing.assert_close(g_ours, g_native, atol=1e-6, rtol=1e-4)


def test_gift_keeps_whole_groups_in_every_micro_batch_and_the_explicit_rewards(tiny_model, tmp_path):
    """4 prompts x G=2 = 8 rows, split over steps_per_generation=2 micro-batches of 4 rows: TRL
    shuffles rows before splitting; GIFT must move groups, so each micro-batch holds 2 whole groups."""
    config = GIFTConfig(
        **common(tmp_path, num_generations=2, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    )
    trainer = GIFTTrainer(tiny_model, reward_funcs=exact_match, train_dataset=dataset(), args=config)
    trainer.model.train()
    rows = [{"prompt": p, "answer": a} for p, a in zip(PROMPTS, ANSWERS) for _ in range(2)]
    for seed in range(3):  # a few shuffles
        torch.manual_seed(seed)
        trainer._buffered_inputs, trainer._step = None, 0
        trainer._prepare_inputs(rows)
        chunks = trainer._buffered_inputs
        assert len(chunks) == 2
        seen = []
        for chunk in chunks:
            assert chunk["prompt_ids"].size(0) == 4
            prompts = trainer.processing_class.batch_decode(chunk["prompt_ids"], skip_special_tokens=True)
            assert prompts[0] == prompts[1] and prompts[2] == prompts[3] and prompts[0] != prompts[2]
            seen += prompts[::2]
            texts = trainer.processing_class.batch_decode(chunk["completion_ids"], skip_special_tokens=True)
            gold = [ANSWERS[PROMPTS.index(p)] for p in prompts]
            torch.testing.assert_close(chunk["rewards"], torch.tensor(exact_match(texts, gold)))
            # the sampling policy's log-probs, computed although TRL skipped them (no update in between)
            valid = chunk["completion_mask"].bool()
            with torch.no_grad():
                policy = token_logps(trainer.model, chunk)
            torch.testing.assert_close(chunk["old_per_token_logps"][valid], policy[valid], atol=1e-5, rtol=0)
        assert sorted(seen) == sorted(PROMPTS)


def test_gift_config_refuses_what_cannot_work(tmp_path, monkeypatch):
    # 2 micro-batches of half a group each
    with pytest.raises(ValueError, match="whole groups in every micro-batch"):
        GIFTConfig(**common(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2))
    monkeypatch.setattr(GIFTConfig, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="whole groups in every micro-batch"):  # a group over 2 processes
        GIFTConfig(**common(tmp_path, per_device_train_batch_size=2))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no KL term"):
        GIFTConfig(**common(tmp_path, beta=0.04))
    with pytest.raises(ValueError, match="gift_reference"):
        GIFTConfig(**common(tmp_path, gift_reference="frozen"))
    with pytest.warns(UserWarning, match="epsilon_high=0.28"):
        GIFTConfig(**common(tmp_path, epsilon_high=0.28))


# ----------------------------------------------------------------------------- GFT


def test_gft_trainer_runs(tiny_model, tmp_path):
    trainer = GFTTrainer(
        tiny_model, reward_funcs=REWARDS, train_dataset=dataset(), eval_dataset=dataset(),
        args=GFTConfig(**common(tmp_path, num_off_policy=2)),
    )  # fmt: skip
    before = weights(trainer.model)
    trainer.train()
    assert_trained(trainer, before, "gft")
    assert torch.isfinite(torch.tensor(trainer.evaluate()["eval_loss"]))
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"gft/advantage_off_policy", "gft/advantage_on_policy", "gft/rectified_frac"} <= logged


@pytest.mark.parametrize("baseline", ["mean", "on_policy_mean"])
def test_gft_groups_hold_the_demonstrations_with_their_spec_advantages(tiny_model, tmp_path, baseline):
    """G = 4: demonstration (correct, R=1), teacher (wrong, R=0), 2 rollouts of a random model (R=0).

    mean:           b = 1/4, s = unbiased std of (1,0,0,0) = sqrt((3/4)^2 + 3 (1/4)^2) / 3) = 1/2
                    A = (3/4) / (1/2 + eps) for the demonstration, -(1/4) / (1/2 + eps) for the rest.
    on_policy_mean: b = 0 (rollouts), s = 1/2: A = 1 / (1/2 + eps) for the demonstration, 0 for the rest.
    """
    config = GFTConfig(**common(tmp_path, num_off_policy=2, gft_baseline=baseline))
    trainer = GFTTrainer(tiny_model, reward_funcs=exact_match, train_dataset=dataset(), args=config)
    trainer.model.train()
    tok = trainer.processing_class
    rows = [dict(dataset()[i]) for i in (0, 1) for _ in range(4)]  # 2 groups of 4, as TRL's sampler
    torch.manual_seed(0)
    batch = trainer._generate_and_score_completions(rows)

    texts = tok.batch_decode(batch["completion_ids"], skip_special_tokens=True)
    for g, answer in enumerate(ANSWERS[:2]):
        demo, teacher = batch["completion_ids"][4 * g], batch["completion_ids"][4 * g + 1]
        assert demo[: len(answer) + 1].tolist() == tok(answer)["input_ids"] + [tok.eos_token_id]
        assert texts[4 * g] == answer and texts[4 * g + 1] == str(int(answer) + 1)
        assert texts[4 * g + 2 : 4 * g + 4] != [answer, answer]  # sampled, not copied
        assert teacher.numel() > 0
    rewards = torch.tensor(exact_match(texts, [a for a in ANSWERS[:2] for _ in range(4)]))
    assert rewards.tolist() == [1, 0, 0, 0] * 2  # the random model misses: the hand-worked case below

    eps = 1e-6
    if baseline == "mean":
        expected = torch.tensor([0.75, -0.25, -0.25, -0.25] * 2) / (0.5 + eps)
    else:
        expected = torch.tensor([1.0, 0.0, 0.0, 0.0] * 2) / (0.5 + eps)
    torch.testing.assert_close(batch["advantages"], expected, atol=1e-6, rtol=0)
    on_policy = torch.tensor([False, False, True, True] * 2)
    native = group_advantages(rewards, 4, baseline=baseline, on_policy_mask=on_policy)
    torch.testing.assert_close(batch["advantages"], native, atol=1e-7, rtol=0)
    logged = list(trainer._logs["advantages"])  # the completions table (holds one generation batch: 4 rows)
    assert logged and logged == batch["advantages"].tolist()[-len(logged) :]


def test_gft_loss_equals_native_gft_loss_on_an_identical_batch(tiny_model, tmp_path):
    trainer = GFTTrainer(
        tiny_model, reward_funcs=exact_match, train_dataset=dataset(), args=GFTConfig(**common(tmp_path))
    )
    model = trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    batch = fixed_batch(trainer.processing_class)
    mask = batch["completion_mask"]
    with torch.no_grad():  # tau between the middle probabilities, so both branches of the rectification act
        p = token_logps(model, batch).exp()[mask.bool()].sort().values
    trainer.args.gft_tau = tau = p[len(p) // 2 - 1 : len(p) // 2 + 1].mean().item()
    assert p[len(p) // 2] - p[len(p) // 2 - 1] > 1e-5  # no token sits on the threshold
    batch["advantages"] = torch.tensor([1.5, -0.5, -0.5, -0.5, 0.9, -1.2, 0.3, 0.0])

    ours, our_grads = loss_and_grads(model, lambda: trainer.compute_loss(model, batch))
    native, native_grads = loss_and_grads(
        model, lambda: gft_loss(token_logps(model, batch), mask, batch["advantages"], tau=tau)[0]
    )
    assert abs(ours.item() - native.item()) <= 1e-6, (ours.item(), native.item())
    assert abs(native.item()) > 1e-3
    for g_ours, g_native in zip(our_grads, native_grads, strict=True):
        torch.testing.assert_close(g_ours, g_native, atol=1e-6, rtol=1e-4)
    rectified = trainer._metrics["train"]["gft/rectified_frac"][-1]
    assert 0.3 < rectified < 0.7


def test_gft_config_refuses_what_cannot_work(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="num_off_policy"):
        GFTConfig(**common(tmp_path, num_off_policy=4))  # no room for a rollout in a group of 4
    with pytest.raises(ValueError, match="temperature"):
        GFTConfig(**common(tmp_path, temperature=0.7))
    # one group over 2 micro-batches is fine: GFT's advantages are computed before the split
    GFTConfig(**common(tmp_path, per_device_train_batch_size=2, gradient_accumulation_steps=2))
    monkeypatch.setattr(GFTConfig, "world_size", property(lambda self: 2))
    with pytest.raises(ValueError, match="each group on one process"):  # a group over 2 processes
        GFTConfig(**common(tmp_path, per_device_train_batch_size=2))
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no KL term"):
        GFTConfig(**common(tmp_path, beta=0.01))
    with pytest.raises(ValueError, match="valid: leave_one_out, mean, on_policy_mean"):
        GFTConfig(**common(tmp_path, gft_baseline="median"))


def test_gft_names_the_missing_teacher_column(tiny_model, tmp_path):
    trainer = GFTTrainer(
        tiny_model, reward_funcs=exact_match, train_dataset=dataset(),
        args=GFTConfig(**common(tmp_path, num_off_policy=3)),
    )  # fmt: skip
    rows = [dict(dataset()[0]) for _ in range(4)]
    with pytest.raises(ValueError, match="needs 2 teacher responses per row in column 'teacher_completions'"):
        trainer._generate_and_score_completions(rows)


# ----------------------------------------------------------------------------- the example


@pytest.mark.parametrize("method", ["grpo", "gift", "gft"])
def test_example_switches_from_grpo_to_gift_and_gft(method, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "examples" / "trl_gift_gft.py"
    spec = importlib.util.spec_from_file_location("trl_gift_gft", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(sys, "argv", ["trl_gift_gft.py", "--method", method, "--smoke"])
    trainer = example.main()  # 2 optimizer steps of a tiny model on the testbed's arithmetic rows
    assert type(trainer).__name__ == f"{method.upper()}Trainer" and trainer.state.global_step == 2
