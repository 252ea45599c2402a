"""Two processes (torchrun, gloo on CPU) train what one process trains with the same global batch.

Under DDP (``torchrun --nproc_per_node 2``), FSDP2 and DeepSpeed ZeRO-2/3 (``accelerate launch``
with the shipped configs), one launch runs ``grouptune train`` (``grouptune.cli.main``) several
times: GFT with a batch-scaled advantage (a statistic reduced over processes), GIFT with the
"old" and with the initial (frozen, sharded under FSDP2 and ZeRO-3) reference, GIFT with LoRA
(reference: the adapter disabled), and a GFT run stopped after 2 rollout batches and resumed
with 2 processes. The single-process references run in this process with the same settings,
and resume the 2-process checkpoint too.

Why a tolerance (1e-6 under DDP; 1e-5 under the sharded engines, see the test) and not
bit-equality, though the DDP runs agree bit for bit on this machine: each process sums the gradient of its own rows and DDP averages the two sums, where
one process accumulates all rows; with other batch shapes or backends floating-point sums
in another order may round differently. The single-process references run with one thread, as
each worker does: a different thread count rounds matrix products differently, and GIFT's
first step with the "old" reference amplifies that rounding by 1/eps (docs/methods.md#gift: its implicit
rewards are all equal up to rounding). Everything else is equal by construction: the same
prompts reach the same optimizer step (groups are laid out step-major over processes),
rollouts are sampled in chunks seeded by their global position
(``rollout.generation_batch_size`` = the rollouts of one process per optimizer step), and the
loss normalisers are the global token / sequence counts of the step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers_launch import SHIM, accelerate_launch, torchrun
from safetensors.torch import load_file

from grouptune.cli import main

# Several runs in one launch (saves process start-ups), as several Trainers in one process:
# a run ends with accelerate's end_training(), which would destroy the process group.
SCRIPT = """
import json, sys
from accelerate.state import PartialState
from grouptune.cli import main
PartialState.destroy_process_group = lambda self, group=None: None
for argv in json.load(open(sys.argv[1])):
    assert main(argv) == 0, argv
"""

# The GIFT reference model is sharded: under FSDP2 as the policy is (each process holds about
# half of every tensor), under ZeRO-3 by a DeepSpeed engine of its own. (Under ZeRO-3 the
# policy's tensors of this tiny model all stay whole: they are below DeepSpeed's default
# persistence threshold of 1e5 elements.)
CHECK_SHARDS = """
from torch.distributed.tensor import DTensor
from grouptune.cli import _overrides, build_parser
from grouptune.config import load_config
from grouptune.trainer import Trainer
t = Trainer(load_config(overrides=_overrides(build_parser().parse_args(json.load(open(sys.argv[2]))))))
fsdp = t.acc.distributed_type == DistributedType.FSDP
for name, model in (("policy", t.model), ("reference", t.policy.reference))[0 if fsdp else 1:]:
    params = list(model.parameters())
    if fsdp:
        assert all(isinstance(p, DTensor) for p in params), name
        local, full = sum(p.to_local().numel() for p in params), sum(p.numel() for p in params)
    else:
        local, full = sum(p.ds_tensor.numel() for p in params), sum(p.ds_numel for p in params)
    assert 0.45 * full < local < 0.6 * full, (name, local, full)  # about 1/2 each
print("shards ok")
"""

# 4 prompts per rollout batch, 2 optimizer steps of 2 groups: 1 group per process per step.
COMMON = {
    "rollout.prompts_per_batch": 4, "rollout.group_size": 6, "rollout.max_new_tokens": 8,
    "reward.functions": "[gsm8k]", "optim.lr": 1e-3, "optim.steps_per_rollout": 2,
    "optim.micro_batch_groups": 1, "optim.total_batches": 3, "log.progress": "false",
}  # fmt: skip
RUNS = {
    # GFT: K = 4 off-policy members, M = 2 rollouts per group; the advantage std is the batch's.
    "gft": {"method.name": "gft", "method.adv_scale": "batch", "rollout.generation_batch_size": 2},
    # GIFT: 6 rollouts per group, "old" reference recomputed per rollout batch.
    "gift": {"method.name": "gift", "rollout.generation_batch_size": 6},
    # GIFT against the frozen initial model: a reference model (sharded under FSDP2 and ZeRO-3).
    "gift_initial": {"method.name": "gift", "method.gift_reference": "initial", "rollout.generation_batch_size": 6},
    # LoRA: the reference is the policy with its adapter disabled; final/ is the merged model
    # (rebuilt whole from the gathered shards under FSDP2 / ZeRO-3). The random model never
    # answers right, so a reward with spread: distinct characters.
    "gift_lora": {"method.name": "gift", "method.gift_reference": "initial", "rollout.generation_batch_size": 6,
                  "model.lora_r": 4, "model.lora_target_modules": "[q_proj,v_proj]", "model.merge_lora_on_save": "true"},
}  # fmt: skip
# ASFT and CHORD under the sharded engines (under DDP: tests/trainer/test_baselines.py). ASFT's loss needs
# the frozen reference's whole logits at every position: its reference is sharded as GIFT's is, and
# gathered by the engine's forward. CHORD's expert rows, here from a separate expert set (data.expert),
# are split over the processes: each takes its consecutive share of a step's rows.
BASELINES = {
    "asft": {"method.name": "asft", "optim.total_batches": 2},
    "chord_phi": {"method.name": "chord_phi", "rollout.generation_batch_size": 6, "optim.total_batches": 2},
}  # fmt: skip
DISTINCT = "def distinct(prompts, completions, **_):\n    return [len(set(c)) / 8 for c in completions]\n"


def argv(model, data, out, run: str, with_eval: bool = False, **extra) -> list[str]:
    values = {"model.name_or_path": model, "data.train": data["train"], "log.output_dir": out,
              **COMMON, **(RUNS | BASELINES)[run], **extra}  # fmt: skip
    if run == "gift_lora":
        reward = Path(data["train"]).parent / "distinct.py"
        reward.write_text(DISTINCT)
        values["reward.functions"] = f"[{reward}:distinct]"
    if with_eval:
        values.update({"data.eval": f"[{data['eval']}]", "log.eval_samples": 2})
    return ["train"] + [x for k, v in values.items() for x in (f"--{k}", str(v))]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "final" / "model.safetensors")


def moved(weights: dict[str, torch.Tensor], base: dict[str, torch.Tensor]) -> float:
    """How far training moved the weights from the base model."""
    return max(float((v - base[k]).abs().max()) for k, v in weights.items())


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


ENGINES = ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"]


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_match_one_and_write_once(engine, tiny_llama, tiny_data, tmp_path):
    """DDP (torchrun, accelerate's MULTI_CPU), and FSDP2 and ZeRO-2/3 through ``accelerate launch``
    with the shipped configs and the shim above."""
    two, one = tmp_path / "two", tmp_path / "one"
    runs = [
        argv(tiny_llama, tiny_data, two / "gft", "gft", with_eval=True),
        argv(tiny_llama, tiny_data, two / "gift", "gift"),
        argv(tiny_llama, tiny_data, two / "gift_initial", "gift_initial"),
        argv(tiny_llama, tiny_data, two / "gift_lora", "gift_lora"),
        argv(tiny_llama, tiny_data, two / "resumed", "gft", **{"optim.total_batches": 2, "checkpoint.save_every": 2}),
        argv(tiny_llama, tiny_data, two / "resumed", "gft", **{"checkpoint.resume": "true"}),
    ]
    (tmp_path / "runs.json").write_text(json.dumps(runs))
    (tmp_path / "gift.json").write_text(json.dumps(argv(tiny_llama, tiny_data, tmp_path / "shards", "gift_initial")))
    if engine == "ddp":
        (tmp_path / "two.py").write_text(SCRIPT)
        code, log = torchrun(2, tmp_path / "two.py", tmp_path / "runs.json")
    else:
        checks = CHECK_SHARDS if engine != "deepspeed_zero2" else 'print("shards ok")'
        (tmp_path / "two.py").write_text(SHIM + SCRIPT + checks)
        code, log = accelerate_launch(engine, 2, tmp_path / "two.py", tmp_path / "runs.json", tmp_path / "gift.json")
    assert code == 0, log[-3000:]
    assert engine == "ddp" or log.count("shards ok") == 2, log[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers: another thread count rounds matrix products differently
    try:
        assert main(argv(tiny_llama, tiny_data, one / "gft", "gft", with_eval=True)) == 0
        for run in ("gift", "gift_initial", "gift_lora"):
            assert main(argv(tiny_llama, tiny_data, one / run, run)) == 0
        # The 2-process checkpoint (gathered from FSDP2 shards or ZeRO partitions) resumes in one process.
        shutil.copytree(two / "resumed" / "checkpoints", one / "resumed" / "checkpoints")
        assert main(argv(tiny_llama, tiny_data, one / "resumed", "gft", **{"checkpoint.resume": "true"})) == 0
    finally:
        torch.set_num_threads(threads)

    base = load_file(Path(tiny_llama) / "model.safetensors")
    for run in RUNS:
        w1, w2 = final_weights(one / run), final_weights(two / run)
        assert set(w2) == set(w1) == set(base), run  # a plain model, also after LoRA (merged)
        assert moved(w1, base) > 1e-3, f"{run}: training barely moved the weights ({moved(w1, base)})"
        # FSDP2 and ZeRO clip with a norm summed from per-shard norms (another rounding), and GIFT's first
        # step has a gradient norm near 1e6 (see the module docstring): 1e-5, still 100x below
        # what training moved the weights.
        atol = 1e-6 if engine == "ddp" else 1e-5
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=atol, msg=lambda m, where=f"{run}: {k}": f"{where}: {m}")
        # Metrics are reduced over processes and written once: one record per rollout batch.
        r1, r2 = [[r for r in records(d / run) if "loss" in r] for d in (one, two)]
        assert [r["batch"] for r in r2] == [1, 2, 3]
        for a, b in zip(r1, r2):
            for key in ("loss", f"{RUNS[run]['method.name']}/loss", "grad_norm", "reward/mean", "entropy"):
                # sharded engines round otherwise (grad norm summed from per-shard norms), and
                # GIFT's loss divides by the small spread of its implicit rewards
                rel = 1e-5 if engine == "ddp" else 1e-4
                assert b[key] == pytest.approx(a[key], rel=rel, abs=1e-7), (run, key, a[key], b[key])
        assert len((two / run / "samples.jsonl").read_text().splitlines()) == 3 * 4

    # The held-out set is split over the processes and gathered: 4 problems, as with one process.
    ev1, ev2 = records(one / "gft")[-1], records(two / "gft")[-1]
    assert ev2["eval/eval/n_problems"] == 4
    assert ev2["eval/eval/greedy"] == ev1["eval/eval/greedy"]

    # Resume with 2 processes: 2 batches, checkpoint, a new run continues to 3 == 3 straight.
    checkpoints = sorted(p.name for p in (two / "resumed" / "checkpoints").iterdir())
    assert checkpoints == ["checkpoint-0000002"]
    straight, resumed = final_weights(two / "gft"), final_weights(two / "resumed")
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert [r["batch"] for r in records(two / "resumed") if "loss" in r] == [1, 2, 3]
    for k, v in final_weights(one / "gft").items():
        torch.testing.assert_close(final_weights(one / "resumed")[k], v, rtol=0, atol=1e-6)


@pytest.mark.parametrize("engine", ENGINES[1:])
def test_asft_and_chord_train_under_sharded_engines_as_in_one_process(engine, tiny_llama, tiny_data, tmp_path):
    """ASFT (its reference sharded under FSDP2 and ZeRO-3, checked) and CHORD-phi with a separate expert
    set, 2 processes through ``accelerate launch`` against 1 process, within the sharded tolerance above."""
    expert = tmp_path / "expert.jsonl"
    expert.write_text("".join(json.dumps({"prompt": f"What is {a} times 3?", "completion": f"{a} times 3 is {3 * a}."})
                              + "\n" for a in range(2, 9)))  # fmt: skip
    extra = {"asft": {}, "chord_phi": {"data.expert": expert}}
    two, one = tmp_path / "two", tmp_path / "one"
    (tmp_path / "runs.json").write_text(json.dumps([argv(tiny_llama, tiny_data, two / r, r, **extra[r]) for r in BASELINES]))
    (tmp_path / "asft.json").write_text(json.dumps(argv(tiny_llama, tiny_data, tmp_path / "shards", "asft")))
    (tmp_path / "two.py").write_text(SHIM + SCRIPT + (CHECK_SHARDS if engine != "deepspeed_zero2" else 'print("shards ok")'))
    code, log = accelerate_launch(engine, 2, tmp_path / "two.py", tmp_path / "runs.json", tmp_path / "asft.json")
    assert code == 0 and log.count("shards ok") == 2, log[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers
    try:
        for r in BASELINES:
            assert main(argv(tiny_llama, tiny_data, one / r, r, **extra[r])) == 0
    finally:
        torch.set_num_threads(threads)
    base = load_file(Path(tiny_llama) / "model.safetensors")
    for r in BASELINES:
        w1, w2 = final_weights(one / r), final_weights(two / r)
        assert set(w2) == set(w1) == set(base) and moved(w1, base) > 1e-3, (r, moved(w1, base))
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], rtol=0, atol=1e-5, msg=lambda m, where=f"{r}: {k}": f"{where}: {m}")
        r1, r2 = [[x for x in records(d / r) if "loss" in x] for d in (one, two)]
        assert [x["batch"] for x in r2] == [1, 2], r
        for a, b in zip(r1, r2):
            for key in ("loss", f"{r}/loss", "grad_norm", "entropy", {"asft": "asft/kl", "chord_phi": "chord_phi/sft_loss"}[r]):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-7), (r, key, a[key], b[key])


def fake_accelerator(engine: str):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    kind = DistributedType.DEEPSPEED if engine.startswith("zero") else DistributedType.FSDP
    state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(zero_stage=3 if engine == "zero3" else 2),
                            fsdp_plugin=SimpleNamespace(fsdp_version=1 if engine == "fsdp1" else 2))  # fmt: skip
    return SimpleNamespace(distributed_type=kind, state=state)


def test_what_sharded_engines_cannot_do_is_refused_with_the_setting_to_change():
    from grouptune.config import ConfigError, load_config
    from grouptune.policy import check_engine

    with pytest.raises(ConfigError, match="fsdp_version: 2"):
        check_engine(fake_accelerator("fsdp1"), load_config(), one_pass_per_step=True)
    with pytest.raises(ConfigError, match="ref_on_cpu"):
        check_engine(fake_accelerator("zero3"), load_config(overrides={"model.ref_on_cpu": True}), True)
    with pytest.raises(ConfigError, match="optim.micro_batch_groups to 0"):
        check_engine(fake_accelerator("zero2"), load_config(), one_pass_per_step=False)
    check_engine(fake_accelerator("fsdp2"), load_config(overrides={"model.ref_on_cpu": True}), False)
