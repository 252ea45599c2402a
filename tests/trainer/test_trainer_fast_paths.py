"""The training loop's shortcuts compute what the plain versions compute.

- The first optimizer step of a rollout batch takes its "old" log-probs from its own forward
  pass, detached, instead of a separate no-grad pass: the policy has not moved yet, so the
  numbers are the same. A run with the separate pass must end with the same weights.
- ``group_has_spread`` (one tensor pass) agrees with a per-group loop on random rewards with NaNs.
"""

from __future__ import annotations

import pytest
import torch
from helpers_runs import make_cfg, weights

from grouptune.advantages import group_has_spread
from grouptune.trainer import Trainer, _mean_dicts


@pytest.mark.parametrize("method", ["grpo", "gift"])
def test_first_step_old_logprobs_from_its_own_forward(method, tiny_llama, tiny_data, tmp_path, monkeypatch):
    fast = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "fast", method, **{"optim.micro_batch_groups": 1}))
    fast.train()

    original = Trainer._logprobs_in_chunks

    def every_group(self, model, batch, temp, groups, device=None, start=0):
        return original(self, model, batch, temp, groups, device=device, start=0)

    def update_reading_the_old_pass(self, batch):  # every step uses the separate pass
        per = self.plan.groups_per_step
        steps = self.cfg.optim.steps_per_rollout
        return _mean_dicts([self.optimizer_step(batch.groups(s * per, (s + 1) * per)) for s in range(steps)])

    monkeypatch.setattr(Trainer, "_logprobs_in_chunks", every_group)
    monkeypatch.setattr(Trainer, "update", update_reading_the_old_pass)
    plain = Trainer(make_cfg(tiny_llama, tiny_data, tmp_path / "plain", method, **{"optim.micro_batch_groups": 1}))
    plain.train()

    a, b = weights(fast.model), weights(plain.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7, msg=k)


def test_group_spread_matches_a_loop_over_groups():
    def loop(rewards, G):
        out = []
        for g in rewards.view(-1, G):
            judged = g[~torch.isnan(g)]
            out.append(bool(len(judged) > 1 and (judged.max() - judged.min()) > 0))
        return out

    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        G = int(torch.randint(2, 7, (1,), generator=gen))
        B = int(torch.randint(1, 5, (1,), generator=gen))
        r = torch.randint(0, 3, (B * G,), generator=gen).float()
        r[torch.rand(B * G, generator=gen) < torch.rand(1, generator=gen)] = float("nan")
        assert group_has_spread(r, G).tolist() == loop(r, G)
    assert group_has_spread(torch.tensor([1.0, float("nan"), 2.0, 2.0]), 2).tolist() == [False, False]
    assert group_has_spread(torch.tensor([0.0, 1.0, float("nan"), float("nan")]), 2).tolist() == [True, False]
