"""Every method's training trajectory is pinned: refactors must not change a single bit.

Each configuration below trains the shipped testbed model for a few rollout batches with a
fixed seed; the SHA-256 of the final weights (every tensor, in name order, as raw bytes) must
equal the hash in ``trajectory_hashes.json``. The hashes were written by the code *before*
the architecture refactor (the loop split, the method registry, ``Batch.cat``, the data
package), so a passing test means the refactor kept every trajectory identical.

A change that is meant to alter trajectories regenerates the file on purpose:

    GROUPTUNE_WRITE_TRAJECTORY_HASHES=1 python -m pytest tests/test_trajectories.py

and says so in its commit message. The hashes are those of this machine's CPU kernels
(torch 2.13 CPU, 2 threads); another CPU or thread count may round differently.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

HASHES = Path(__file__).parent / "trajectory_hashes.json"

COMMON = {
    "rollout.prompts_per_batch": 8,
    "rollout.group_size": 6,
    "rollout.max_new_tokens": 24,
    "method.num_off_policy": 3,
    "optim.total_batches": 2,
    "optim.steps_per_rollout": 2,
    "log.eval_every": 0,
    "log.progress": False,
    "log.samples_per_log": 2,
    "data.eval": [],
    "checkpoint.save_final": False,
    "optim.seed": 3,
}

# One entry per method, plus the settings that take a different code path.
CASES = {
    "sft": {},
    "sft_mix": {},
    "dft": {},
    "gft": {},
    "gft_nomix": {},
    "grpo": {},
    "dapo": {"method.max_resample_rounds": 2},
    "gspo": {},
    "gift": {},
    "gift_initial": {"method.name": "gift", "method.gift_reference": "initial"},
    "grpo_kl_micro": {"method.name": "grpo", "method.kl_beta": 0.05, "optim.micro_batch_groups": 2},
    "gft_loo_truncmask": {"method.name": "gft", "method.adv_baseline": "leave_one_out", "rollout.mask_truncated": True},
    "grpo_dynamic_overlong": {"method.name": "grpo", "method.dynamic_sampling": True, "method.overlong_buffer": 6,
                              "method.loss_type": "grpo", "method.epsilon_high": 0.3},
    "gift_lora_initial": {"method.name": "gift", "method.gift_reference": "initial", "model.lora_r": 4},
}


def final_weights_hash(model) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def run_case(case: str, out: Path) -> str:
    from grouptune.testbed.commands import testbed_config
    from grouptune.trainer import Trainer

    settings = {**COMMON, "method.name": case, **CASES[case], "log.output_dir": str(out)}
    trainer = Trainer(testbed_config(settings))
    trainer.train()
    return final_weights_hash(trainer.acc.unwrap_model(trainer.model))


@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_is_unchanged(case, tmp_path, fresh_accelerate):
    got = run_case(case, tmp_path / case)
    if os.environ.get("GROUPTUNE_WRITE_TRAJECTORY_HASHES"):
        table = json.loads(HASHES.read_text()) if HASHES.is_file() else {}
        table[case] = got
        HASHES.write_text(json.dumps(dict(sorted(table.items())), indent=1) + "\n")
    expected = json.loads(HASHES.read_text())[case]
    assert got == expected, f"{case}: final weights differ from the pinned trajectory"
