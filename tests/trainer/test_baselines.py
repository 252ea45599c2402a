"""What the trainer gives the GFT paper's other baselines (ASFT, PSFT, LUFFY, CHORD), dual clip and
the micro-batch normaliser, on the tiny test models.

Every registered method also trains, saves and reloads in ``test_trainer.py``; the losses' math is
in ``tests/losses``.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import arithmetic_rows, write_jsonl
from helpers_runs import make_cfg, weights

from grouptune.config import ConfigError
from grouptune.data import DataError
from grouptune.layout import DataOrder, seed_for
from grouptune.losses import chord_mu
from grouptune.methods import METHODS, LossInputs, register
from grouptune.rollout import completion_logits, completion_logprobs
from grouptune.trainer import Trainer


def first_micro_batch(trainer: Trainer):
    """The first micro-batch of the first optimizer step of a fresh rollout batch, and its StepInputs."""
    batch, _ = trainer.make_batch()
    trainer.add_fixed_logprobs(batch)
    plan = trainer.plan
    mini = batch.groups(0, plan.groups_per_step)
    step = trainer.feeder.step(mini)
    return mini.groups(0, plan.groups_per_micro).trimmed(), step


def naive_kl(policy, reference, mb) -> torch.Tensor:
    with torch.no_grad():
        logits, ref = completion_logits(policy, mb), completion_logits(reference, mb)
    return F.kl_div(F.log_softmax(logits.float(), -1), F.softmax(ref.float(), -1), reduction="none").sum(-1)


@torch.no_grad()
def nudge(params, scale=0.05, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for p in params:
        p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.mark.parametrize("lora", [False, True])
def test_asft_gets_the_full_vocabulary_kl_to_its_reference(lora, tiny_llama, tiny_data, tmp_path):
    """The KL the loss receives is F.kl_div of the policy's and the reference's logits at every position:
    0 while the policy is the reference, then that of the moved policy. Under LoRA the reference is the
    base model with the adapter disabled (no copy is loaded)."""
    extra = {"model.lora_r": 4, "model.lora_alpha": 8} if lora else {}
    trainer = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "asft", **extra))
    policy = trainer.acc.unwrap_model(trainer.model)
    assert (trainer.policy.reference is None) == lora
    mb, step = first_micro_batch(trainer)
    inputs, _ = step.inputs(0, mb)
    assert inputs.ref_kl.shape == inputs.logp.shape and inputs.ref_kl.abs().max() == 0  # pi = pi_ref

    nudge([p for n, p in policy.named_parameters() if ("lora_B" in n if lora else "mlp" in n)])
    inputs, _ = step.inputs(0, mb)
    if lora:
        with torch.no_grad():
            logits = completion_logits(policy, mb)
            with policy.disable_adapter():  # the base model
                ref = completion_logits(policy, mb)
        expected = F.kl_div(F.log_softmax(logits, -1), F.softmax(ref, -1), reduction="none").sum(-1)
    else:
        expected = naive_kl(policy, trainer.policy.reference, mb)
    assert expected.abs().max() > 1e-4
    torch.testing.assert_close(inputs.ref_kl.detach(), expected, rtol=1e-5, atol=1e-6)
    assert inputs.ref_kl.requires_grad and inputs.ref_logp is inputs.old_logp  # no reference log-probs computed


def test_asft_run_logs_its_kl_and_it_grows_from_zero(tiny_llama, tiny_data, tmp_path):
    Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "asft", **{"optim.total_batches": 2})).train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert records[0]["asft/kl"] >= 0 and records[-1]["asft/kl"] > records[0]["asft/kl"]


def test_psft_is_a_group_of_one_and_group_methods_still_refuse_one(tiny_llama, tiny_data, tmp_path):
    trainer = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "p", "psft", **{"rollout.group_size": 1}))
    assert (trainer.plan.group_size, trainer.plan.off_policy, trainer.plan.on_policy) == (1, 1, 0)
    cfg = trainer.cfg.method
    assert (cfg.loss_type, cfg.epsilon_low, cfg.epsilon_high) == ("grpo", 0.2, 0.28)
    for method in ("grpo", "chord_phi", "gift"):
        with pytest.raises(ConfigError, match="needs groups of at least 2"):
            Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / method, method, **{"rollout.group_size": 1}))
    with pytest.raises(ConfigError, match="must exceed the off-policy members"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "l", "luffy", **{"rollout.group_size": 1}))


def test_psft_ratio_is_one_in_the_first_step_and_moves_after(tiny_llama, tiny_data, tmp_path):
    """Two optimizer steps per batch: the second step's old log-probs are those of the batch's start."""
    Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "psft", **{"optim.total_batches": 1, "optim.lr": 0.05})).train()
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["psft/clip_ratio/low"] == 0.0  # A = 1: never clipped from below
    assert record["psft/clip_ratio/high"] > 0  # step 2: the ratio of a big first step passed 1.28 somewhere


def test_luffy_advantages_have_no_std_and_the_loss_gets_entropy_and_members(tiny_llama, tiny_data, tmp_path):
    trainer = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path, "luffy"))
    m = trainer.cfg.method
    assert (m.adv_scale, m.luffy_normalizer) == ("none", 8.0 * 8)  # max_new_tokens 8, times 8
    assert (trainer.plan.off_policy, trainer.plan.on_policy) == (1, 5)
    mb, step = first_micro_batch(trainer)
    rewards = mb.rewards.view(-1, 6)
    torch.testing.assert_close(mb.adv.view(-1, 6), rewards - rewards.mean(-1, keepdim=True))
    inputs, _ = step.inputs(0, mb)
    assert inputs.entropy.requires_grad and inputs.on_policy.tolist() == [False] + [True] * 5 + [False] + [True] * 5


def test_chord_expert_stream(tiny_llama, tiny_data, tmp_path):
    """Each optimizer step takes groups_per_step * chord_expert_per_group demonstrations of its own data
    order; they are scored in the micro-batch's forward; mu follows the schedule of the step."""
    cfg = make_cfg(tiny_llama, tiny_data, tmp_path, "chord_mu", **{"method.chord_expert_per_group": 3,
                                                                  "optim.micro_batch_groups": 1})  # fmt: skip
    trainer = Trainer(cfg)
    m = trainer.cfg.method
    assert (m.dual_clip, m.chord_mu_warmup, m.chord_mu_decay, m.chord_mu_peak, m.chord_mu_valley) == (3.0, 0, 200, 0.9, 0.05)
    mb, step = first_micro_batch(trainer)
    assert len(step.expert.prompt_ids) == trainer.plan.groups_per_step * 3 == 6
    assert trainer.state["expert_cursor"] == 6
    demos = trainer.tokenizer.batch_decode([ids[mask.bool()] for ids, mask in zip(step.expert.completion_ids,
                                                                                   step.expert.completion_mask)],
                                           skip_special_tokens=True)  # fmt: skip
    by_index = {ex.index: ex for ex in trainer.train_data}
    for demo, index in zip(demos, step.expert.example_index.tolist()):  # the data set's demonstrations (cut at 8 tokens)
        assert demo and by_index[index].completion.startswith(demo)
    assert len(set(step.expert.example_index.tolist())) == 6  # 6 different prompts of the shuffled expert order
    inputs, _ = step.inputs(0, mb)
    assert inputs.expert_logp.shape[0] == 3 and inputs.expert_logp.requires_grad
    assert inputs.expert_tokens == float(step.expert.completion_mask.sum())
    alone, _ = completion_logprobs(trainer.acc.unwrap_model(trainer.model), step.expert.groups(0, 3).trimmed())
    torch.testing.assert_close(inputs.expert_logp.detach() * inputs.expert_mask, alone.detach() * inputs.expert_mask,
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    trainer.train()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    steps = trainer.cfg.optim.steps_per_rollout
    for b, record in enumerate(records):  # mean of mu over the batch's optimizer steps
        expected = sum(chord_mu(b * steps + s + 1, 0, 200, 0.9, 0.05) for s in range(steps)) / steps
        assert record["chord_mu/mu"] == pytest.approx(expected, rel=1e-9)
        assert "chord_mu/clip_ratio/dual" in record and "chord_mu/sft_loss" in record


def expert_set(path, n: int = 5) -> str:
    """A separate expert SFT data set: prompts other than the training rows', each with a demonstration."""
    rows = [{"prompt": f"What is {a} times 3?", "completion": f"{a} times 3 is {3 * a}. #### {3 * a}"}
            for a in range(2, 2 + n)]  # fmt: skip
    return str(write_jsonl(path, rows))


def test_chord_expert_stream_from_its_own_data_set_resumes_bit_exactly(tiny_llama, tmp_path):
    """data.expert: the expert rows are that set's demonstrations in the seeded expert order (5 rows, 4 per
    step: the order runs over epochs); the training rows then need no demonstration; a run stopped after 2
    rollout batches and resumed continues the same stream: the weights equal those of 4 batches straight."""
    train = [{k: v for k, v in row.items() if k != "completion"} for row in arithmetic_rows(12)]
    data = {"train": write_jsonl(tmp_path / "train.jsonl", train), "eval": write_jsonl(tmp_path / "eval.jsonl", train[:2])}
    expert = {"data.expert": expert_set(tmp_path / "expert.jsonl")}
    probe = Trainer(make_cfg(tiny_llama, data, tmp_path / "probe", "chord_phi", **expert))
    assert [ex.completion for ex in probe.feeder.expert_data] == [f"{a} times 3 is {3 * a}. #### {3 * a}"
                                                                  for a in range(2, 7)]  # fmt: skip
    _, step = first_micro_batch(probe)
    order = DataOrder(5, seed_for(0, -2))
    assert step.expert.example_index.tolist() == [order(i) for i in range(4)]
    demos = probe.tokenizer.batch_decode([ids[m.bool()] for ids, m in zip(step.expert.completion_ids,
                                                                             step.expert.completion_mask)],
                                            skip_special_tokens=True)  # fmt: skip
    for demo, index in zip(demos, step.expert.example_index.tolist()):  # cut at max_new_tokens (8)
        assert demo and probe.feeder.expert_data[index].completion.startswith(demo)
    straight = Trainer(make_cfg(tiny_llama, data, tmp_path / "a", "chord_phi", **expert, **{"optim.total_batches": 4}))
    straight.train()
    first = Trainer(make_cfg(tiny_llama, data, tmp_path / "b", "chord_phi", **expert,
                             **{"optim.total_batches": 2, "checkpoint.save_every": 2}))  # fmt: skip
    first.train()
    second = Trainer(make_cfg(tiny_llama, data, tmp_path / "b", "chord_phi", **expert,
                              **{"optim.total_batches": 4, "checkpoint.resume": True}))  # fmt: skip
    second.train()
    assert second.state["expert_cursor"] == straight.state["expert_cursor"] == 4 * 2 * 4
    a, b = weights(straight.model), weights(second.model)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(DataError, match="column 'completion': column not found"):  # without data.expert: the
        Trainer(make_cfg(tiny_llama, data, tmp_path / "c", "chord_phi"))  # training rows' demonstrations


def test_expert_set_is_checked_before_the_model_loads(tiny_llama, tiny_data, tmp_path, monkeypatch):
    """A row without a demonstration (named by file, row, line and column), a missing file, and a method
    without an expert stream are refused before any model loads."""
    import grouptune.trainer

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(grouptune.trainer, "build_policy", no_model)
    path = tmp_path / "expert.jsonl"
    rows = [{"prompt": "What is 2 + 2?", "completion": "4"}, {"prompt": "What is 3 + 3?", "completion": " "},
            {"prompt": "What is 4 + 4?"}]  # fmt: skip
    write_jsonl(path, rows)
    with pytest.raises(DataError) as err:
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "a", "chord_mu", **{"data.expert": str(path)}))
    assert [(p.row, p.column) for p in err.value.problems] == [(1, "completion"), (2, "completion")]
    assert f"{path}, row 1 (line 2), column 'completion': no demonstration" in str(err.value)
    assert f"{path}, row 2 (line 3), column 'completion': no demonstration" in str(err.value)
    with pytest.raises(ConfigError, match="data.expert: file not found"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "b", "chord_phi", **{"data.expert": str(tmp_path / "x.jsonl")}))
    with pytest.raises(ConfigError, match=r"method grpo has no expert stream to feed \(only chord_mu, chord_phi\)"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "c", "grpo", **{"data.expert": str(path)}))


def test_dual_clip_setting_reaches_grpo_and_is_checked(tiny_llama, tiny_data, tmp_path):
    Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "g", "grpo", **{"method.dual_clip": 3.0,
                                                                      "optim.total_batches": 1})).train()  # fmt: skip
    record = json.loads((tmp_path / "g" / "metrics.jsonl").read_text().splitlines()[0])
    assert "grpo/clip_ratio/dual" in record
    with pytest.raises(ConfigError, match="method.dual_clip must be 0"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "bad", "grpo", **{"method.dual_clip": 0.5}))
    with pytest.raises(ConfigError, match="method.loss_normalizer = 'batch': must be one of 'step', 'micro_batch'"):
        Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "bad2", "grpo", **{"method.loss_normalizer": "batch"}))


@pytest.fixture
def recording_method():
    seen: list[LossInputs] = []

    @register("record_sft", summary="SFT that records its inputs", off_policy="demo+teacher", on_policy=False,
              uses_advantages=False, tempered=False)  # fmt: skip
    def _record(x: LossInputs, m):
        seen.append(x)
        return (-(x.logp * x.mask).sum() / x.tokens), {}

    yield seen
    METHODS.pop("record_sft", None)


def test_micro_batch_normaliser_is_each_micro_batch_tokens_times_their_number(recording_method, tiny_llama, tiny_data,
                                                                               tmp_path):  # fmt: skip
    """``loss_normalizer: micro_batch`` (the official GFT code / verl): the loss of a step is the mean over
    micro-batches of their token means; ``step`` (default) divides every micro-batch by the step's tokens."""
    overrides = {"optim.micro_batch_groups": 1, "optim.steps_per_rollout": 1, "method.num_off_policy": 4}
    for mode in ("step", "micro_batch"):
        recording_method.clear()
        trainer = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / mode, "record_sft",
                                   **overrides, **{"method.loss_normalizer": mode}))  # fmt: skip
        batch, _ = trainer.make_batch()
        trainer.optimizer_step(batch)
        counts = [float(x.mask.sum()) for x in recording_method]
        assert len(counts) == 4 and len(set(counts)) > 1, "micro-batches of different lengths make the test"
        expected = [sum(counts)] * 4 if mode == "step" else [c * 4 for c in counts]
        assert [x.tokens for x in recording_method] == expected


# Two processes (DDP through torchrun, gloo on CPU) against one, as tests/trainer/test_distributed.py does for
# GFT and GIFT: the normalisers (LUFFY's constant over processes, CHORD's expert tokens), CHORD's expert stream
# split over processes, ASFT's reference per process.
DDP_RUNS = {"asft": {}, "psft": {}, "luffy": {"rollout.generation_batch_size": 5},
            "chord_phi": {"rollout.generation_batch_size": 6}}  # fmt: skip


def test_two_processes_train_what_one_process_trains(tiny_llama, tiny_data, tmp_path):
    import test_distributed as dist
    from safetensors.torch import load_file

    from grouptune.cli import main

    def argv(out, method):
        values = {"model.name_or_path": tiny_llama, "data.train": tiny_data["train"], "log.output_dir": out,
                  **dist.COMMON, "method.name": method, **DDP_RUNS[method]}  # fmt: skip
        return ["train"] + [x for k, v in values.items() for x in (f"--{k}", str(v))]

    (tmp_path / "runs.json").write_text(json.dumps([argv(tmp_path / "two" / m, m) for m in DDP_RUNS]))
    (tmp_path / "two.py").write_text(dist.SCRIPT)
    code, log = dist.torchrun(2, tmp_path / "two.py", tmp_path / "runs.json", timeout=400)
    assert code == 0, log[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        for m in DDP_RUNS:
            assert main(argv(tmp_path / "one" / m, m)) == 0
    finally:
        torch.set_num_threads(threads)
    base = load_file(tiny_llama / "model.safetensors")
    for m in DDP_RUNS:
        w1, w2 = dist.final_weights(tmp_path / "one" / m), dist.final_weights(tmp_path / "two" / m)
        assert dist.moved(w1, base) > 1e-3, m
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-6, msg=lambda s, where=f"{m}: {k}": f"{where}: {s}")
        r1, r2 = [[r for r in dist.records(d / m) if "loss" in r] for d in (tmp_path / "one", tmp_path / "two")]
        assert len(r1) == len(r2) == 3
        for a, b in zip(r1, r2):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-7), (m, a["loss"], b["loss"])
